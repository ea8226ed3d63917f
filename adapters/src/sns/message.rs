//! Amazon SNS HTTP(S) messages as they arrive, and the trust boundary: a body parses into an
//! [`Unverified`] message, and only the [`super::Verifier`] turns it into a [`Verified`] one. Nothing
//! that acts on a message takes anything but a `Verified`.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

/// The three kinds of message SNS POSTs (`Type`, also in the `x-amz-sns-message-type` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Notification,
    SubscriptionConfirmation,
    UnsubscribeConfirmation,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Notification => "Notification",
            Self::SubscriptionConfirmation => "SubscriptionConfirmation",
            Self::UnsubscribeConfirmation => "UnsubscribeConfirmation",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        match value {
            "Notification" => Some(Self::Notification),
            "SubscriptionConfirmation" => Some(Self::SubscriptionConfirmation),
            "UnsubscribeConfirmation" => Some(Self::UnsubscribeConfirmation),
            _ => None,
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The fields of an SNS message (all strings on the wire). Fields SNS does not sign
/// (`UnsubscribeURL`, `MessageAttributes`) are not kept, so nothing unsigned can be acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnsMessage {
    pub kind: MessageType,
    pub message_id: String,
    pub topic_arn: String,
    pub subject: Option<String>,
    pub message: String,
    pub timestamp: String,
    pub signature_version: String,
    pub signature: String,
    pub signing_cert_url: String,
    /// Confirmations only.
    pub subscribe_url: Option<String>,
    /// Confirmations only.
    pub token: Option<String>,
}

impl SnsMessage {
    /// The exact bytes SNS signed: `Key\nValue\n` for each signed key present, in SNS's order.
    pub fn string_to_sign(&self) -> String {
        let mut out = String::with_capacity(self.message.len() + 512);
        let mut push = |key: &str, value: &str| {
            out.push_str(key);
            out.push('\n');
            out.push_str(value);
            out.push('\n');
        };
        match self.kind {
            MessageType::Notification => {
                push("Message", &self.message);
                push("MessageId", &self.message_id);
                if let Some(subject) = &self.subject {
                    push("Subject", subject);
                }
                push("Timestamp", &self.timestamp);
                push("TopicArn", &self.topic_arn);
                push("Type", self.kind.as_str());
            }
            MessageType::SubscriptionConfirmation | MessageType::UnsubscribeConfirmation => {
                push("Message", &self.message);
                push("MessageId", &self.message_id);
                push("SubscribeURL", self.subscribe_url.as_deref().unwrap_or_default());
                push("Timestamp", &self.timestamp);
                push("Token", self.token.as_deref().unwrap_or_default());
                push("TopicArn", &self.topic_arn);
                push("Type", self.kind.as_str());
            }
        }
        out
    }
}

/// Why a body is not an SNS message at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the body is not a JSON object: {0}")]
    NotJson(String),
    /// Raw message delivery (or anything else without SNS's signed envelope).
    #[error(
        "not a signed SNS message (no `Type`/`Signature`): raw message delivery carries no signature and is \
         not accepted; turn RawMessageDelivery off on the subscription"
    )]
    Unsigned,
    #[error("unknown SNS message type {0:?}")]
    UnknownType(String),
    #[error("`{0}` is missing")]
    Missing(&'static str),
    #[error("`{0}` must be a string")]
    NotAString(&'static str),
}

/// A message as received: nothing in it is trusted yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unverified(SnsMessage);

impl Unverified {
    /// Parses a body (JSON whatever the Content-Type says).
    pub fn parse(body: &[u8]) -> Result<Self, ParseError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Wire {
            #[serde(rename = "Type")]
            kind: Option<Value>,
            message_id: Option<Value>,
            topic_arn: Option<Value>,
            subject: Option<Value>,
            message: Option<Value>,
            timestamp: Option<Value>,
            signature_version: Option<Value>,
            signature: Option<Value>,
            #[serde(rename = "SigningCertURL")]
            signing_cert_url: Option<Value>,
            #[serde(rename = "SubscribeURL")]
            subscribe_url: Option<Value>,
            token: Option<Value>,
        }
        let wire: Wire = serde_json::from_slice(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
        if wire.kind.is_none() || wire.signature.is_none() {
            return Err(ParseError::Unsigned);
        }
        fn text(value: Option<Value>, name: &'static str) -> Result<Option<String>, ParseError> {
            match value {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(ParseError::NotAString(name)),
            }
        }
        fn required(value: Option<Value>, name: &'static str) -> Result<String, ParseError> {
            text(value, name)?.ok_or(ParseError::Missing(name))
        }
        let kind_text = required(wire.kind, "Type")?;
        let kind = MessageType::parse(&kind_text).ok_or(ParseError::UnknownType(kind_text))?;
        let confirmation = kind != MessageType::Notification;
        let subscribe_url = text(wire.subscribe_url, "SubscribeURL")?;
        let token = text(wire.token, "Token")?;
        if confirmation && subscribe_url.is_none() {
            return Err(ParseError::Missing("SubscribeURL"));
        }
        if confirmation && token.is_none() {
            return Err(ParseError::Missing("Token"));
        }
        Ok(Self(SnsMessage {
            kind,
            message_id: required(wire.message_id, "MessageId")?,
            topic_arn: required(wire.topic_arn, "TopicArn")?,
            subject: if confirmation { None } else { text(wire.subject, "Subject")? },
            message: required(wire.message, "Message")?,
            timestamp: required(wire.timestamp, "Timestamp")?,
            signature_version: required(wire.signature_version, "SignatureVersion")?,
            signature: required(wire.signature, "Signature")?,
            signing_cert_url: required(wire.signing_cert_url, "SigningCertURL")?,
            subscribe_url: if confirmation { subscribe_url } else { None },
            token: if confirmation { token } else { None },
        }))
    }

    /// Read-only access for checks and logs; acting on it needs [`Verified`].
    pub fn peek(&self) -> &SnsMessage {
        &self.0
    }

    pub(super) fn into_inner(self) -> SnsMessage {
        self.0
    }
}

/// A message whose signature, certificate, topic and age were checked (or, with
/// `insecure_skip_verify`, whose topic and age were). Only this module can make one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified(SnsMessage);

impl Verified {
    pub(super) fn new(message: SnsMessage) -> Self {
        Self(message)
    }

    pub fn message(&self) -> &SnsMessage {
        &self.0
    }
}

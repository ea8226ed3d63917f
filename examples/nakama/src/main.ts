// gameye-bridge for Nakama: a TypeScript runtime module.
//
// - The matchmaker-matched hook sends the matched users to gameye-bridge (POST /v1/nakama/matched),
//   which picks the lowest-latency region, starts one Gameye session and answers where to connect.
//   The players get an in-app notification: subject "gameye_match", code 7300, content
//   {host, port, ports, session_id, match_id} (what Gameye's own Nakama plugin sends), or
//   "gameye_failed", code 7301, content {match_id, reason, code, message, retryable}.
// - The RPC "gameye_bridge_result" receives the bridge's push (nakama.rpc_url), so a result the hook
//   did not see (a timeout, ?wait=false) still reaches the players. Hook and RPC claim each match in
//   Nakama's storage first, so players are notified once, whichever arrives first.
// - Session end events are forwarded to POST /v1/nakama/events.
//
// Configuration, from Nakama's runtime.env:
//   GAMEYE_BRIDGE_URL          e.g. http://gameye-bridge:8080 (required)
//   GAMEYE_BRIDGE_TOKEN        one of the bridge's http.tokens, sent as a bearer token, or
//   GAMEYE_BRIDGE_HMAC_SECRET  the bridge's nakama.hmac_secret: requests are signed instead
//   GAMEYE_BRIDGE_PUSH         "true" when the bridge pushes results (nakama.rpc_url is set): the
//                              hook then leaves timeouts to the push instead of reporting a failure
//   GAMEYE_BRIDGE_WAIT         "false": the hook only hands the match over (202); the push answers
//   GAMEYE_BRIDGE_TIMEOUT_MS   hook request timeout, default 5000 (Nakama's own default)
//   GAMEYE_BRIDGE_IMAGE, GAMEYE_BRIDGE_VERSION, GAMEYE_BRIDGE_MAX_PLAYERS: sent with every match

const RESULT_RPC_ID = "gameye_bridge_result";
const MATCH_SUBJECT = "gameye_match";
const MATCH_CODE = 7300;
const FAILED_SUBJECT = "gameye_failed";
const FAILED_CODE = 7301;
const CLAIM_COLLECTION = "gameye_bridge_notified";
const SYSTEM_USER_ID = "00000000-0000-0000-0000-000000000000";
const PERMISSION_DENIED = 7;
const INVALID_ARGUMENT = 3;

interface BridgePort {
    type: string;
    container: number;
    host: number;
}

/** The bridge's answer to a placed match (its Assignment), or its push for one. */
interface Placed {
    match_id: string;
    session_id: string;
    host: string;
    ports: BridgePort[];
    location?: string;
    /** The Assignment calls them players; the push calls them users. Both are Nakama user ids. */
    players?: string[];
    users?: string[];
}

interface FailureDetail {
    code: string;
    message: string;
    retryable: boolean;
}

/** The bridge's failure answer, or its push for one. */
interface Failed {
    match_id: string;
    users?: string[];
    error: FailureDetail;
}

interface BridgeConfig {
    url: string;
    token: string;
    hmacSecret: string;
    push: boolean;
    wait: boolean;
    timeoutMs: number;
    image: string;
    version: string;
    maxPlayers: number;
}

function bridgeConfig(ctx: nkruntime.Context): BridgeConfig {
    const env = ctx.env || {};
    const url = (env["GAMEYE_BRIDGE_URL"] || "").replace(/\/+$/, "");
    if (!url) {
        throw new Error("GAMEYE_BRIDGE_URL is not set in Nakama's runtime.env");
    }
    return {
        url: url,
        token: env["GAMEYE_BRIDGE_TOKEN"] || "",
        hmacSecret: env["GAMEYE_BRIDGE_HMAC_SECRET"] || "",
        push: env["GAMEYE_BRIDGE_PUSH"] === "true",
        wait: env["GAMEYE_BRIDGE_WAIT"] !== "false",
        timeoutMs: parseInt(env["GAMEYE_BRIDGE_TIMEOUT_MS"] || "5000", 10) || 5000,
        image: env["GAMEYE_BRIDGE_IMAGE"] || "",
        version: env["GAMEYE_BRIDGE_VERSION"] || "",
        maxPlayers: parseInt(env["GAMEYE_BRIDGE_MAX_PLAYERS"] || "0", 10) || 0,
    };
}

/** POSTs JSON to the bridge, authenticated by signature (preferred) or bearer token. */
function postToBridge(nk: nkruntime.Nakama, config: BridgeConfig, path: string, body: string): nkruntime.HttpResponse {
    const headers: { [header: string]: string } = { "Content-Type": "application/json", "Accept": "application/json" };
    if (config.hmacSecret) {
        const timestamp = String(Math.floor(new Date().getTime() / 1000));
        const mac = nk.hmacSha256Hash(timestamp + "." + body, config.hmacSecret);
        headers["X-Bridge-Timestamp"] = timestamp;
        headers["X-Bridge-Signature"] = "sha256=" + nk.base16Encode(mac).toLowerCase();
    } else if (config.token) {
        headers["Authorization"] = "Bearer " + config.token;
    }
    return nk.httpRequest(config.url + path, "post", headers, body, config.timeoutMs);
}

/** Gameye's plugin's failure reasons, from the bridge's failure codes. */
function failureReason(code: string): string {
    switch (code) {
        case "NO_CAPACITY":
        case "NO_LOCATION":
            return "no_capacity";
        case "QUOTA_EXCEEDED":
            return "quota_exceeded";
        case "UNAUTHORIZED":
        case "NOT_FOUND":
        case "INVALID_REQUEST":
            return "misconfigured";
        case "UPSTREAM_UNAVAILABLE":
        case "STORE_UNAVAILABLE":
        case "STORE_ERROR":
        case "INTERNAL":
            return "unavailable";
        case "DEADLINE_EXCEEDED":
        case "TIMEOUT":
            return "timeout";
        default:
            return "error";
    }
}

/** The port players connect to: the first UDP port, else the first port at all. */
function mainPort(ports: BridgePort[]): number {
    for (let i = 0; i < ports.length; i++) {
        if (ports[i].type === "udp") {
            return ports[i].host;
        }
    }
    return ports.length > 0 ? ports[0].host : 0;
}

/**
 * Claims the right to notify a match's players. Hook and RPC may both see the same result; the
 * storage write with version "*" succeeds only for the first, so players hear of it once.
 */
function claimNotification(nk: nkruntime.Nakama, logger: nkruntime.Logger, matchId: string): boolean {
    try {
        nk.storageWrite([{
            collection: CLAIM_COLLECTION,
            key: matchId,
            userId: SYSTEM_USER_ID,
            value: { at: new Date().toISOString() },
            version: "*",
            permissionRead: 0,
            permissionWrite: 0,
        }]);
        return true;
    } catch (error) {
        logger.debug("gameye-bridge: match %s was already notified", matchId);
        return false;
    }
}

function notifyPlaced(nk: nkruntime.Nakama, logger: nkruntime.Logger, placed: Placed, users: string[]): number {
    if (users.length === 0 || !claimNotification(nk, logger, placed.match_id)) {
        return 0;
    }
    const ports = placed.ports || [];
    const content = {
        host: placed.host,
        port: mainPort(ports),
        ports: ports,
        session_id: placed.session_id,
        match_id: placed.match_id,
    };
    const notifications: nkruntime.NotificationRequest[] = [];
    for (let i = 0; i < users.length; i++) {
        notifications.push({ userId: users[i], subject: MATCH_SUBJECT, content: content, code: MATCH_CODE, persistent: false });
    }
    nk.notificationsSend(notifications);
    logger.info("gameye-bridge: match %s placed in %s, %d players notified", placed.match_id, placed.location || "?", users.length);
    return users.length;
}

function notifyFailed(nk: nkruntime.Nakama, logger: nkruntime.Logger, failed: Failed, users: string[]): number {
    if (users.length === 0 || !claimNotification(nk, logger, failed.match_id)) {
        return 0;
    }
    const content = {
        match_id: failed.match_id,
        reason: failureReason(failed.error.code),
        code: failed.error.code,
        message: failed.error.message,
        retryable: failed.error.retryable,
    };
    const notifications: nkruntime.NotificationRequest[] = [];
    for (let i = 0; i < users.length; i++) {
        notifications.push({ userId: users[i], subject: FAILED_SUBJECT, content: content, code: FAILED_CODE, persistent: false });
    }
    nk.notificationsSend(notifications);
    logger.warn("gameye-bridge: match %s failed: %s (%s)", failed.match_id, failed.error.code, failed.error.message);
    return users.length;
}

const matchmakerMatched: nkruntime.MatchmakerMatchedFunction = function (ctx, logger, nk, matches) {
    const config = bridgeConfig(ctx);
    const users: string[] = [];
    for (let i = 0; i < matches.length; i++) {
        users.push(matches[i].presence.userId);
    }
    // The JS runtime gives no ticket ids to derive a match id from: name the match here, once, so
    // the bridge recognises a retry of this call as the same match.
    const matchId = "nakama-" + nk.uuidv4();
    const envelope: { [key: string]: any } = { match_id: matchId, entries: matches };
    if (config.image) {
        envelope["image"] = config.image;
    }
    if (config.version) {
        envelope["version"] = config.version;
    }
    if (config.maxPlayers > 0) {
        envelope["max_players"] = config.maxPlayers;
    }
    const path = "/v1/nakama/matched" + (config.wait ? "" : "?wait=false");
    let response: nkruntime.HttpResponse;
    try {
        response = postToBridge(nk, config, path, JSON.stringify(envelope));
    } catch (error) {
        // Timeout or bridge unreachable. With the push configured the result still arrives by RPC.
        logger.error("gameye-bridge: match %s: request failed: %s", matchId, String(error));
        if (!config.push) {
            notifyFailed(nk, logger, { match_id: matchId, error: { code: "TIMEOUT", message: String(error), retryable: true } }, users);
        }
        return;
    }
    if (response.code === 202) {
        logger.info("gameye-bridge: match %s accepted; the result comes by push", matchId);
        return;
    }
    let answer: any;
    try {
        answer = JSON.parse(response.body);
    } catch (error) {
        answer = null;
    }
    if (response.code === 200 && answer && answer.host !== undefined) {
        notifyPlaced(nk, logger, answer as Placed, users);
    } else if (answer && answer.error && answer.match_id) {
        // The failure JSON of the placement (status mapped like POST /v1/matches).
        notifyFailed(nk, logger, answer as Failed, users);
    } else if (response.code >= 500) {
        // The bridge could not say (its state store down, say), and a claim it could not confirm may
        // still be placed: as with a timeout, the push tells when configured, and the one claim to
        // notify these players is left to it.
        const code = answer && answer.error ? String(answer.error.code) : "HTTP_" + response.code;
        const message = answer && answer.error ? String(answer.error.message) : "HTTP " + response.code;
        logger.error("gameye-bridge: match %s not answered: %s: %s", matchId, code, message);
        if (!config.push) {
            notifyFailed(nk, logger, { match_id: matchId, error: { code: code, message: message, retryable: true } }, users);
        }
    } else {
        // The bridge refused the call itself (401, 413, 422 …): a setup problem players cannot fix.
        const detail = answer && answer.error ? answer.error.code + ": " + answer.error.message : "HTTP " + response.code;
        logger.error("gameye-bridge: match %s refused: %s", matchId, detail);
        notifyFailed(nk, logger, { match_id: matchId, error: { code: "INVALID_REQUEST", message: detail, retryable: false } }, users);
    }
    return;
};

const bridgeResult: nkruntime.RpcFunction = function (ctx, logger, nk, payload) {
    // Only the bridge (server to server, with the http_key) may announce results: a player calling
    // this RPC could otherwise send fake connection details to anyone.
    if (ctx.userId) {
        throw { message: "gameye_bridge_result is server-to-server only", code: PERMISSION_DENIED } as nkruntime.Error;
    }
    let push: any;
    try {
        push = JSON.parse(payload);
    } catch (error) {
        throw { message: "payload is not JSON", code: INVALID_ARGUMENT } as nkruntime.Error;
    }
    if (!push || typeof push.match_id !== "string") {
        throw { message: "payload has no match_id", code: INVALID_ARGUMENT } as nkruntime.Error;
    }
    const users: string[] = push.users || [];
    let notified = 0;
    if (push.status === "placed") {
        notified = notifyPlaced(nk, logger, push as Placed, users);
    } else if (push.status === "failed" && push.error) {
        notified = notifyFailed(nk, logger, push as Failed, users);
    } else {
        throw { message: "unknown push status", code: INVALID_ARGUMENT } as nkruntime.Error;
    }
    return JSON.stringify({ match_id: push.match_id, notified: notified });
};

const sessionEnd: nkruntime.EventFunction = function (ctx, logger, nk, evt) {
    if (!ctx.userId) {
        return;
    }
    const config = bridgeConfig(ctx);
    const body = JSON.stringify({ name: "session_end", user_id: ctx.userId, session_id: ctx.sessionId });
    try {
        const response = postToBridge(nk, config, "/v1/nakama/events", body);
        if (response.code !== 202) {
            logger.warn("gameye-bridge: session end of %s refused: HTTP %d", ctx.userId, response.code);
        }
    } catch (error) {
        logger.warn("gameye-bridge: session end of %s not delivered: %s", ctx.userId, String(error));
    }
};

function InitModule(ctx: nkruntime.Context, logger: nkruntime.Logger, nk: nkruntime.Nakama, initializer: nkruntime.Initializer) {
    initializer.registerMatchmakerMatched(matchmakerMatched);
    initializer.registerRpc(RESULT_RPC_ID, bridgeResult);
    initializer.registerEventSessionEnd(sessionEnd);
    logger.info("gameye-bridge module loaded (bridge %s)", (ctx.env && ctx.env["GAMEYE_BRIDGE_URL"]) || "not configured");
}

// Nakama looks for a global InitModule; this reference (Nakama's own idiom) keeps tools from dropping it.
!InitModule && InitModule.bind(null);

//! The harness itself: real Redis and NATS servers that tests can stop and restart.

use crate::harness::{NatsServer, RedisServer};

#[tokio::test]
async fn redis_server_answers_and_survives_restart() {
    let mut redis = RedisServer::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("SET").arg("k").arg("v").query_async(&mut connection).await.unwrap();
    let value: String = redis::cmd("GET").arg("k").query_async(&mut connection).await.unwrap();
    assert_eq!(value, "v");

    redis.stop();
    assert!(client.get_multiplexed_async_connection().await.is_err(), "stopped server still answers");

    redis.restart();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let value: Option<String> = redis::cmd("GET").arg("k").query_async(&mut connection).await.unwrap();
    assert_eq!(value, None, "nothing is persisted across restarts");
}

#[tokio::test]
async fn nats_server_has_jetstream_that_survives_restart() {
    let mut nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client.clone());
    jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: "HARNESS".into(),
            subjects: vec!["harness.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    jetstream.publish("harness.one", "payload".into()).await.unwrap().await.unwrap();
    drop(client);

    nats.restart();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream("HARNESS").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1, "JetStream data survives a restart");
}

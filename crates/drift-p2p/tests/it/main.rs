//! Integration tests: real endpoints on 127.0.0.1.

use drift_crypto::ClusterSecret;
use drift_p2p::{Config, Endpoint, Event, Events, NodeKey, Role};

type Ep = Endpoint<String>;

fn config(secret: &ClusterSecret, role: Role) -> Config {
    Config::new(secret, NodeKey::generate(), role)
}

fn echo(mut events: Events<String>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            eprintln!("server event {event:?}");
            if let Event::Stream { mut stream, .. } = event {
                tokio::spawn(async move {
                    let r = stream.recv().await;
                    eprintln!("server recv {r:?}");
                    if let Ok(Some(m)) = r {
                        eprintln!("send {:?}", stream.send(&format!("echo {m}")).await);
                        eprintln!("finish {:?}", stream.finish().await);
                    }
                });
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response() {
    let secret = ClusterSecret::generate().unwrap();
    let (server, events) = Ep::bind("127.0.0.1:0".parse().unwrap(), config(&secret, Role::Node))
        .await
        .unwrap();
    echo(events);
    let (client, _ev) = Ep::client(config(&secret, Role::Client));
    let conn = client.connect(server.local_addr().unwrap()).await.unwrap();
    assert_eq!(conn.request("a".into()).await.unwrap(), "echo a");
    client.shutdown().await;
    server.shutdown().await;
}

//! A peer that sends garbage to the cluster port loses only its own connection.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cluster::{start_cluster, wait_leader};

async fn closed(stream: &mut tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_cluster_port_closes_only_that_connection() {
    let root = tempfile::tempdir().unwrap();
    let (_addrs, nodes) = start_cluster(root.path(), None).await;
    let leader = wait_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let target = nodes[(leader + 1) % 3].addr;

    // A frame over the limit, a body that is not JSON, a valid frame for an unknown group.
    let mut huge = tokio::net::TcpStream::connect(target).await.unwrap();
    huge.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    assert!(
        closed(&mut huge).await,
        "an oversized frame closes the connection"
    );

    let mut junk = tokio::net::TcpStream::connect(target).await.unwrap();
    junk.write_all(&5u32.to_be_bytes()).await.unwrap();
    junk.write_all(b"\xff\x00{[x").await.unwrap();
    assert!(
        closed(&mut junk).await,
        "an undecodable frame closes the connection"
    );

    let mut half = tokio::net::TcpStream::connect(target).await.unwrap();
    half.write_all(&100u32.to_be_bytes()).await.unwrap();
    half.write_all(b"{\"group\":").await.unwrap();
    drop(half);

    // The cluster keeps replicating through all of it.
    for i in 0..5 {
        assert_eq!(nodes[leader].append(&format!("ok{i}")).await.unwrap(), i);
    }
    for n in &nodes {
        crate::cluster::eventually("replicated after garbage", || n.values().len() == 5).await;
    }
    for n in nodes {
        n.stop().await;
    }
}

mod common;
use common::*;

#[tokio::test]
async fn placeholder() {
    let s = TestServer::start().await;
    let c = s.client();
    let (st, _) = c.get("/_matrix/client/versions").await;
    assert_eq!(st, 200);
}

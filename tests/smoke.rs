#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod support;

use support::gateway::{http_gateway, service_entry};
use support::{Client, TestGateway, Upstream};

#[tokio::test]
async fn routes_to_backend() {
    let a = Upstream::new("a").run().await;
    let yaml = format!(
        "{}{}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: vs\nspec:\n  hosts: [app.test]\n  gateways: [gw]\n  http:\n  - route:\n    - destination:\n        host: app.svc\n",
        http_gateway("gw", 8080, &["*"]),
        service_entry("app.svc", 80, "HTTP", &[(&a, "v1")])
    );
    let gw = TestGateway::start(&yaml).await;
    let r = Client::new(gw.port(8080), "app.test").send("/x?y=1").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "a");
    assert_eq!(a.last().uri, "/x?y=1");
    assert_eq!(a.last().headers["host"], "app.test");
    let r = Client::new(gw.port(8080), "app.test")
        .h2()
        .send("/h2")
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(a.last().uri, "/h2");
}

//! One access-log line per call, whatever answers it: the gateway's own services (reflection,
//! health) go through the stack and the log like calls to backends. Alone in its test binary,
//! so the captured log holds this test's lines only.

mod support;

use support::{TestGateway, stderr, stdout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_and_health_go_through_the_stack_and_the_access_log() {
    let logs = support::logs();
    let gw = TestGateway::start().await;
    let list = gw.grpcurl(&["list"]);
    assert!(stdout(&list).contains("grpc.health.v1.Health"), "{}", stderr(&list));
    let health = gw.grpcurl(&["-d", r#"{"service":"shop.users.v1.UserService"}"#, "grpc.health.v1.Health/Check"]);
    assert!(stdout(&health).contains("\"status\": \"SERVING\""), "{}{}", stdout(&health), stderr(&health));
    let user = gw.grpcurl(&["-d", r#"{"id":"u-1"}"#, "shop.users.v1.UserService/GetUser"]);
    assert!(user.status.success(), "{}", stderr(&user));

    let text = logs.text();
    let access: Vec<&str> = text.lines().filter(|l| l.contains("dragoman::access")).collect();
    let count = |method: &str| access.iter().filter(|l| l.contains(method) && l.contains("status=Ok")).count();
    // grpcurl (1.8.6 speaks reflection v1alpha) resolves what it calls first: one reflection
    // stream per run.
    assert_eq!(count("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"), 3, "{}", access.join("\n"));
    assert_eq!(count("/grpc.health.v1.Health/Check"), 1, "{}", access.join("\n"));
    assert_eq!(count("/shop.users.v1.UserService/GetUser"), 1, "{}", access.join("\n"));
}

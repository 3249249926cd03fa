//! The daemon's HTTP surface against a real Redis and Git repository.

mod common;

use common::daemon::TestDaemon;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_path_is_404() {
    let daemon = TestDaemon::start("", &[]).await;
    let response = reqwest::get(daemon.url("/nope")).await.unwrap();
    assert_eq!(response.status(), 404);
}

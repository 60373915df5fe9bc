//! Headless Chromium for the operator screen's browser tests: a `chromedriver` started on a
//! free loopback port, driven over WebDriver with fantoccini, killed on drop. Screenshots go
//! under the target directory's `tmp/screenshots/`, outside the repository.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`; `.ci/run` installs them). `USHER_CHROMIUM` and `USHER_CHROMEDRIVER`
//! point elsewhere.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// One headless browser with its own chromedriver.
pub struct Browser {
    pub client: Client,
    driver: tokio::process::Child,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

impl Browser {
    pub async fn start() -> Self {
        let chromium =
            std::env::var("USHER_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let driver_bin =
            std::env::var("USHER_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        for bin in [&chromium, &driver_bin] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: install Debian's chromium and chromium-driver (see .ci/run)"
            );
        }
        let port = free_port();
        let driver = tokio::process::Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {driver_bin}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let caps = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--window-size=1280,900", "--autoplay-policy=no-user-gesture-required"],
            }
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session in headless Chromium");
        Self { client, driver }
    }

    /// Saves a PNG of the page as `tmp/screenshots/NAME.png` under the target directory.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// The visible text of the first element matching `css` ("" when there is none).
    pub async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits until the text of `css` satisfies `ok`; panics after `timeout` with the last text.
    pub async fn wait_text(
        &self,
        css: &str,
        timeout: Duration,
        what: &str,
        ok: impl Fn(&str) -> bool,
    ) -> String {
        let t0 = Instant::now();
        loop {
            let t = self.text(css).await;
            if ok(&t) {
                return t;
            }
            assert!(
                t0.elapsed() < timeout,
                "waited {timeout:?} for {what} in {css}; it shows {t:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types into the element matching `css` (fantoccini's `Key`s work inside `text`).
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"));
        e.send_keys(text).await.expect("send keys");
    }

    pub async fn click(&self, css: &str) {
        let e = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"));
        e.click().await.expect("click");
    }

    /// Whether the element matching `css` is displayed.
    pub async fn visible(&self, css: &str) -> bool {
        match self.client.find(Locator::Css(css)).await {
            Ok(e) => e.is_displayed().await.unwrap_or(false),
            Err(_) => false,
        }
    }

    /// Runs an async script in the page; its `arguments[arguments.length - 1]` callback's value.
    pub async fn run_async(&self, script: &str) -> Value {
        self.client
            .execute_async(script, vec![])
            .await
            .expect("execute async script")
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.start_kill();
    }
}

//! A real headless Chromium driven over WebDriver (`chromedriver` started by the test on a free
//! loopback port), for browser tests of the console and the gate screen. Include it with
//! `#[path = "e2e_support/browser.rs"] mod browser;`.
//!
//! [`Browser::start`] returns `None` (and says so loudly) when `chromium` or `chromedriver` is
//! not installed, so a developer machine without them skips; CI installs both (`.ci/run`).
//! Screenshots go to `$CARGO_TARGET_DIR/tmp/screenshots/` (outside the repository).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMIUM: &[&str] = &["/usr/bin/chromium", "/usr/bin/chromium-browser"];
const CHROMEDRIVER: &[&str] = &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"];

fn first_existing(paths: &[&'static str]) -> Option<&'static str> {
    paths.iter().copied().find(|p| Path::new(p).exists())
}

/// Chromium under WebDriver; chromedriver (and with it the browser) is killed on drop.
pub struct Browser {
    pub client: Client,
    driver: tokio::process::Child,
    shots: PathBuf,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium (1280×1000), or `None` when either is absent.
    pub async fn start() -> Option<Self> {
        let (Some(chromium), Some(chromedriver)) =
            (first_existing(CHROMIUM), first_existing(CHROMEDRIVER))
        else {
            eprintln!(
                "\n!!!!! SKIPPED: no chromium/chromedriver on this machine (install Debian's \
                 `chromium` and `chromium-driver`; CI does). The browser test did not run. !!!!!\n"
            );
            return None;
        };
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
            l.local_addr().expect("local addr").port()
        };
        let driver = tokio::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn chromedriver");
        let profile = tempfile::tempdir().expect("tempdir");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000",
                         "--force-device-scale-factor=1",
                         format!("--user-data-dir={}", profile.path().display())],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("cannot start a Chromium session through chromedriver: {e}"),
            }
        };
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
        let shots = target.join("tmp").join("screenshots");
        std::fs::create_dir_all(&shots).expect("create the screenshot directory");
        Some(Self {
            client,
            driver,
            shots,
            _profile: profile,
        })
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.wait_for(css, Duration::from_secs(10)).await
    }

    /// Waits until an element matching `css` exists.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> fantoccini::elements::Element {
        let deadline = Instant::now() + timeout;
        loop {
            match self.client.find(Locator::Css(css)).await {
                Ok(e) => return e,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!(
                    "no element `{css}` within {timeout:?} ({e}) on {}",
                    self.url().await
                ),
            }
        }
    }

    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// Types `text` into the field `css` (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        e.clear().await.expect("clear a field");
        e.send_keys(text).await.expect("type into a field");
    }

    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click `{css}`: {e}"));
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap_or_default()
    }

    /// Runs a script in the page and returns its value.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed ({e}): {script}"))
    }

    /// Waits until `probe` (a script returning a value) returns something `ok` accepts; panics
    /// with the last value after `timeout`.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        script: &str,
        ok: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.js(script, vec![]).await;
            if ok(&v) {
                return v;
            }
            if Instant::now() >= deadline {
                panic!("timed out after {timeout:?} waiting for {what}; last value {v}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG of the viewport as `<name>.png` in the screenshot directory; returns the
    /// bytes and the path.
    pub async fn screenshot(&self, name: &str) -> (Vec<u8>, PathBuf) {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, &png).expect("write the screenshot");
        eprintln!("screenshot: {}", path.display());
        (png, path)
    }

    /// Presses one key on the keyboard, wherever the focus is (WebDriver key actions: the
    /// browser handles it as a real key press, so Tab moves the focus and Enter submits).
    pub async fn press(&self, key: fantoccini::key::Key) {
        self.keys(&[char::from(key)]).await;
    }

    /// Types `text` with the keyboard into whatever has the focus.
    pub async fn type_keys(&self, text: &str) {
        let chars: Vec<char> = text.chars().collect();
        self.keys(&chars).await;
    }

    async fn keys(&self, chars: &[char]) {
        use fantoccini::actions::{InputSource, KeyAction, KeyActions};
        let mut actions = KeyActions::new("keyboard".into());
        for &c in chars {
            actions = actions
                .then(KeyAction::Down { value: c })
                .then(KeyAction::Up { value: c });
        }
        self.client
            .perform_actions(actions)
            .await
            .unwrap_or_else(|e| panic!("press keys: {e}"));
    }

    /// Presses Tab until the focused element matches `css`; returns how many presses it took
    /// (panics after `max`).
    pub async fn tab_to(&self, css: &str, max: usize) -> usize {
        for n in 0..=max {
            let here = self
                .js(
                    "const a = document.activeElement; return !!a && a.matches(arguments[0]);",
                    vec![json!(css)],
                )
                .await;
            if here == json!(true) {
                return n;
            }
            self.press(fantoccini::key::Key::Tab).await;
        }
        let at = self
            .js(
                "const a = document.activeElement; return a ? a.outerHTML.slice(0, 200) : null;",
                vec![],
            )
            .await;
        panic!("`{css}` not reached with {max} Tab presses; the focus is on {at}");
    }

    /// The form controls and buttons of the page that have no accessible name (no `<label
    /// for>`, no wrapping label, no `aria-label`/`aria-labelledby`, no text for a button).
    pub async fn unlabelled_controls(&self) -> Vec<String> {
        let v = self
            .js(
                "const named = (el) => {
                   if (el.getAttribute('aria-label')) return true;
                   const by = el.getAttribute('aria-labelledby');
                   if (by && by.split(/\\s+/).some((id) => document.getElementById(id))) return true;
                   if (el.labels && el.labels.length > 0) return true;
                   if (el.tagName === 'BUTTON' && el.innerText.trim()) return true;
                   if (el.tagName === 'INPUT' && ['submit', 'button'].includes(el.type) && el.value) return true;
                   return false;
                 };
                 return [...document.querySelectorAll('input, select, textarea, button')]
                   .filter((el) => el.type !== 'hidden' && !named(el))
                   .map((el) => el.outerHTML.slice(0, 160));",
                vec![],
            )
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
        drop(self.driver);
    }
}

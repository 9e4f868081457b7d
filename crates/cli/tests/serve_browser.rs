//! `captioner serve` end to end in a real browser: the binary serves the committed default model,
//! headless Chromium (driven over WebDriver by `fantoccini` through Debian's `chromedriver`)
//! uploads a Flickr8k test image on the page, the caption is read off the page, a word is hovered
//! to draw its attention heat-map, and screenshots are saved (desktop and phone width) under
//! `target/tmp/serve-browser/`. Then SIGTERM must stop the server cleanly.
//!
//! Needs `chromium` and `chromium-driver` (Debian; `.ci/run` installs them). Without them the test
//! says so and passes, unless `CAPTIONER_REQUIRE_BROWSER=1` (set by `.ci/run`), where it fails.
//! `CAPTIONER_CHROMEDRIVER` / `CAPTIONER_CHROMIUM` point at other binaries.

#![cfg(unix)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, MouseActions, PointerAction};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

mod common;
use common::shared_data;

fn binary(env: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    path.is_file().then_some(path)
}

/// A child process killed (if still running) when the test ends, however it ends. Started in a
/// process group of its own, the whole group goes: chromedriver's Chromium too, even when a failed
/// assertion skipped closing the session.
struct Reaped(Child);

impl Reaped {
    fn spawn(command: &mut Command, what: &str) -> Self {
        use std::os::unix::process::CommandExt;
        Self(
            command
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("start {what}: {e}")),
        )
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free a moment ago (the server and chromedriver take a port number, not a socket).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Polls `url` until it answers 200, the process exits, or the deadline passes.
async fn wait_until_up(url: &str, process: &mut Child, what: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(resp) = client.get(url).send().await {
            if resp.status().is_success() {
                return;
            }
        }
        if let Ok(Some(status)) = process.try_wait() {
            panic!("{what} exited before answering {url}: {status}");
        }
        assert!(Instant::now() < deadline, "{what} did not answer {url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `script` in the page until it returns something other than null/false/"" (or times out).
async fn wait_for_js(client: &Client, script: &str, what: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let value = client.execute(script, vec![]).await.expect("run script");
        let ready = !matches!(&value, Value::Null | Value::Bool(false))
            && value.as_str().is_none_or(|s| !s.is_empty());
        if ready {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn save(dir: &Path, name: &str, png: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(png.starts_with(b"\x89PNG"), "{name} is not a PNG");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_captions_an_uploaded_photo_in_headless_chromium() {
    let required = std::env::var("CAPTIONER_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let (Some(chromedriver), Some(chromium)) = (
        binary("CAPTIONER_CHROMEDRIVER", "/usr/bin/chromedriver"),
        binary("CAPTIONER_CHROMIUM", "/usr/bin/chromium"),
    ) else {
        assert!(
            !required,
            "CAPTIONER_REQUIRE_BROWSER=1 but /usr/bin/chromedriver or /usr/bin/chromium is \
             missing: apt-get install chromium chromium-driver"
        );
        eprintln!(
            "SKIPPED: the browser test needs Debian's chromium and chromium-driver \
             (apt-get install chromium chromium-driver); .ci/run installs them"
        );
        return;
    };
    let data = shared_data();
    // WebDriver takes only canonical paths for file inputs.
    let image = data
        .join("flickr8k/images/1000268201_693b08cb0e.jpg")
        .canonicalize()
        .expect("the test image");
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-browser");
    std::fs::create_dir_all(&shots).expect("screenshot folder");
    let profile = tempfile::tempdir().expect("browser profile folder");

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = Reaped::spawn(
        Command::new(env!("CARGO_BIN_EXE_captioner"))
            .env("CAPTIONER_SHARED_DATA", &data)
            .env_remove("CAPTIONER_MODEL")
            .args(["serve", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
        "captioner serve",
    );
    wait_until_up(&format!("{base}/healthz"), &mut server.0, "captioner serve").await;

    let driver_port = free_port();
    let mut driver = Reaped::spawn(
        Command::new(&chromedriver)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "chromedriver",
    );
    let driver_url = format!("http://127.0.0.1:{driver_port}");
    wait_until_up(
        &format!("{driver_url}/status"),
        &mut driver.0,
        "chromedriver",
    )
    .await;

    let capabilities = json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
                "--window-size=1200,900",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!("a JSON object literal")
    };
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver_url)
        .await
        .expect("open a Chromium session");

    client
        .goto(&format!("{base}/"))
        .await
        .expect("open the page");
    let title = client.title().await.expect("page title");
    assert!(title.to_lowercase().contains("caption"), "title {title:?}");
    // The footer names the model once /v1/models has answered.
    let model = wait_for_js(
        &client,
        "return document.getElementById('model').textContent",
        "the model line",
    )
    .await;
    assert!(
        model.as_str().is_some_and(|m| m.contains("default")),
        "footer: {model}"
    );

    // Choosing a file captions it at once.
    let input = client
        .find(Locator::Css("#file"))
        .await
        .expect("the file input");
    input
        .send_keys(&image.to_string_lossy())
        .await
        .expect("choose the image");
    let caption = wait_for_js(
        &client,
        "const s = document.getElementById('status').textContent;
         if (s.startsWith('Could not') || s.startsWith('The server')) return 'ERROR: ' + s;
         return s === 'Done.' ? document.getElementById('caption').textContent.trim() : null;",
        "the caption",
    )
    .await;
    let caption = caption.as_str().unwrap_or_default().to_string();
    assert!(!caption.starts_with("ERROR"), "{caption}");
    let words: Vec<&str> = caption.split_whitespace().collect();
    assert!((3..=20).contains(&words.len()), "caption {caption:?}");
    let subject = ["girl", "child", "little", "kid", "boy", "person"];
    assert!(
        words.iter().any(|w| subject.contains(w)),
        "no person in {caption:?}"
    );
    let hypotheses = client
        .execute(
            "return document.querySelectorAll('#hypotheses li').length",
            vec![],
        )
        .await
        .expect("count hypotheses");
    assert_eq!(hypotheses, json!(3), "the page asks for beam 3, top 3");

    // Hovering a word draws its attention map over the photo.
    let word = client
        .find(Locator::Css("#caption .word:nth-of-type(3)"))
        .await
        .expect("a caption word");
    client
        .perform_actions(
            MouseActions::new("mouse".into()).then(PointerAction::MoveToElement {
                element: word,
                duration: Some(Duration::from_millis(50)),
                x: 0.0,
                y: 0.0,
            }),
        )
        .await
        .expect("hover a word");
    let painted = wait_for_js(
        &client,
        "const c = document.getElementById('heat');
         if (!c.width || !c.height) return null;
         const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
         let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
         return n > 0 ? n : null;",
        "the heat-map",
    )
    .await;
    assert!(
        painted.as_u64().unwrap_or(0) > 0,
        "heat-map pixels {painted}"
    );
    let desktop = save(
        &shots,
        "desktop.png",
        &client.screenshot().await.expect("screenshot"),
    );

    // Phone width: nothing sticks out sideways.
    client
        .set_window_size(390, 844)
        .await
        .expect("phone-width window");
    let overflow = client
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
            vec![],
        )
        .await
        .expect("measure the page");
    assert!(
        overflow.as_i64().is_some_and(|o| o <= 0),
        "the page is {overflow} px wider than a phone screen"
    );
    save(
        &shots,
        "phone.png",
        &client.screenshot().await.expect("screenshot"),
    );
    client.close().await.expect("close the browser");
    eprintln!("caption {caption:?}; screenshots in {}", desktop.display());

    // SIGTERM: the server finishes and exits successfully.
    let pid = server.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.0.try_wait().expect("wait for the server") {
            break status;
        }
        assert!(Instant::now() < deadline, "the server ignored SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit after SIGTERM: {status}");
}

//! Prometheus metrics, kept by hand (a few counters and histograms behind one mutex each) and
//! written in the text exposition format by [`Metrics::render`].

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the request latency histogram.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds of the batch size histogram.
const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (c, &b) in self.counts.iter_mut().zip(self.bounds) {
            if v <= b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (c, b) in self.counts.iter().zip(self.bounds) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// Everything `/metrics` reports.
#[derive(Debug)]
pub struct Metrics {
    /// `(route, method, status)` -> count.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// route -> latency histogram.
    latency: Mutex<BTreeMap<String, Histogram>>,
    batches: Mutex<Histogram>,
    in_flight: AtomicI64,
    queue_depth: AtomicI64,
    queue_capacity: AtomicU64,
    captions: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::default(),
            latency: Mutex::default(),
            batches: Mutex::new(Histogram::new(&BATCH_BUCKETS)),
            in_flight: AtomicI64::new(0),
            queue_depth: AtomicI64::new(0),
            queue_capacity: AtomicU64::new(0),
            captions: AtomicU64::new(0),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a metrics lock leaves plain numbers behind: keep counting.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Escapes a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Counts one finished request.
    pub fn record_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        *lock(&self.requests)
            .entry((route.to_string(), method.to_string(), status))
            .or_insert(0) += 1;
        lock(&self.latency)
            .entry(route.to_string())
            .or_insert_with(|| Histogram::new(&LATENCY_BUCKETS))
            .observe(elapsed.as_secs_f64());
    }

    /// A request started (+1) or ended (-1).
    pub fn add_in_flight(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    /// Requests being answered now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// An image entered (+1) or left (-1) the queue.
    pub fn add_queue_depth(&self, delta: i64) {
        self.queue_depth.fetch_add(delta, Ordering::Relaxed);
    }

    /// Images waiting for the worker now.
    pub fn queue_depth(&self) -> i64 {
        self.queue_depth.load(Ordering::Relaxed)
    }

    /// Records the queue's capacity.
    pub fn set_queue_capacity(&self, capacity: usize) {
        self.queue_capacity
            .store(capacity as u64, Ordering::Relaxed);
    }

    /// One batch of `size` images went through the model.
    pub fn record_batch(&self, size: usize) {
        lock(&self.batches).observe(size as f64);
        self.captions.fetch_add(size as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP captioner_http_requests_total HTTP requests answered, by route, method and status.\n");
        out.push_str("# TYPE captioner_http_requests_total counter\n");
        for ((route, method, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "captioner_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                label(route),
                label(method)
            );
        }
        out.push_str(
            "# HELP captioner_http_request_duration_seconds Time to answer a request, by route.\n",
        );
        out.push_str("# TYPE captioner_http_request_duration_seconds histogram\n");
        for (route, h) in lock(&self.latency).iter() {
            h.render(
                &mut out,
                "captioner_http_request_duration_seconds",
                &format!("route=\"{}\"", label(route)),
            );
        }
        out.push_str("# HELP captioner_http_requests_in_flight Requests being answered now.\n");
        out.push_str("# TYPE captioner_http_requests_in_flight gauge\n");
        let _ = writeln!(
            out,
            "captioner_http_requests_in_flight {}",
            self.in_flight()
        );
        out.push_str("# HELP captioner_queue_depth Images waiting for the captioning worker.\n");
        out.push_str("# TYPE captioner_queue_depth gauge\n");
        let _ = writeln!(out, "captioner_queue_depth {}", self.queue_depth().max(0));
        out.push_str(
            "# HELP captioner_queue_capacity Most images the queue holds before answering 503.\n",
        );
        out.push_str("# TYPE captioner_queue_capacity gauge\n");
        let _ = writeln!(
            out,
            "captioner_queue_capacity {}",
            self.queue_capacity.load(Ordering::Relaxed)
        );
        out.push_str("# HELP captioner_batch_size Images per encoder/decoder batch.\n");
        out.push_str("# TYPE captioner_batch_size histogram\n");
        lock(&self.batches).render(&mut out, "captioner_batch_size", "");
        out.push_str("# HELP captioner_captions_total Images captioned.\n");
        out.push_str("# TYPE captioner_captions_total counter\n");
        let _ = writeln!(
            out,
            "captioner_captions_total {}",
            self.captions.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.record_request("/healthz", "GET", 200, Duration::from_millis(3));
        m.record_request("/healthz", "GET", 200, Duration::from_millis(30));
        m.record_batch(3);
        let text = m.render();
        assert!(text.contains(
            "captioner_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "captioner_http_request_duration_seconds_bucket{route=\"/healthz\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "captioner_http_request_duration_seconds_bucket{route=\"/healthz\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains("captioner_batch_size_bucket{le=\"2\"} 0"));
        assert!(text.contains("captioner_batch_size_bucket{le=\"4\"} 1"));
        assert!(text.contains("captioner_batch_size_count 1"));
        assert!(text.contains("captioner_captions_total 3"));
    }
}

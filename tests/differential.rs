//! The differential test of the HTTP/1.1 codec (`src/http1`) against hyper 1.x: the same
//! bytes are read by Portcullis and by hyper, and every message Portcullis accepts must
//! be framed exactly as hyper frames it. Portcullis may refuse more (it is stricter
//! than hyper on purpose); it must never accept something and read it differently.
//!
//! # How each side reads
//!
//! - Requests. Portcullis: `parse_request_head` (64 KiB, 100 fields) → `check_head` →
//!   the body decoder its framing names, looping while the connection would be kept
//!   alive, as `src/server/http1` does. hyper: its HTTP/1 server (`half_close`, a 1 MiB
//!   buffer, otherwise defaults) over a duplex, the input written whole and the write
//!   half shut; the service records each request and answers `200`.
//! - Responses. Portcullis: `parse_response_head` (skipping at most 8 interim `1xx`) →
//!   `response_framing` → its decoder, the input's end being the upstream's close, as
//!   `src/upstream/http1` does. hyper: its HTTP/1 client sends `GET` (or `HEAD`); the
//!   test's server reads the request, writes the input and closes.
//!
//! # What is compared
//!
//! Method, target, version, body bytes, trailers, and the header fields in order, with
//! Portcullis's deliberate normalisations accounted for:
//! - `Expect` is removed (the server answers `100-continue` itself);
//! - `Content-Length` is one normalised decimal (`005`, two `5` lines → `5`); hyper keeps
//!   its first line's spelling, so the values are compared as numbers;
//! - with an absolute-form target, `Host` is the target's authority;
//! - with `UnderscoreHeaders::Drop`, names with `_` are removed;
//! - trailers never carry the names `fields::is_forbidden_in_trailers` lists.
//!
//! Responses are compared as they are: Portcullis's client changes nothing in them.
//!
//! # Documented differences
//!
//! Portcullis is stricter than hyper, and refuses what hyper reads, for: `Host` missing,
//! empty or repeated on HTTP/1.1; `Content-Length` together with `Transfer-Encoding`;
//! `chunked` not alone or not once (`gzip, chunked` is 501; `chunked` on two lines,
//! `chunked, chunked`); an `Expect` other than `100-continue`; authority-form targets
//! and `CONNECT`; userinfo in an absolute target; whitespace around a chunk size or in
//! chunk extensions, and extensions that are not tokens or quoted strings; bare LF in
//! trailer lines; more than 8 interim responses; a `101` to a request that asked for no
//! upgrade. The summary the tests print counts each class with its shortest input.
//!
//! Portcullis is laxer than hyper, safely, for [`verdict::LAXER_LENGTH_LIST`] and
//! [`verdict::LAXER_EMPTY_CODINGS`] (both as RFC 9110 allows or requires), and for two
//! of hyper's size limits: [`verdict::LAXER_EXTENSIONS_TOTAL`],
//! [`verdict::LAXER_TRAILER_SIZE`]; and it keeps a connection hyper closes for
//! [`verdict::LAXER_OBS_TEXT_CONNECTION`].
//!
//! One documented difference where hyper is off the RFC:
//! [`verdict::FINDING_RESPONSE_EMPTY_CODINGS`]. The findings this test made when it was
//! written (an HTTP/1.0 `close` undone by `keep-alive`, `chunked` twice in a response
//! read until close, HTTP/1.0 responses with Transfer-Encoding decoded and kept alive,
//! a response head limit that held only for heads arriving in pieces, a trailer limit
//! 4 bytes over) are fixed; the corpus keeps their cases, and
//! `trailer_section_limit_is_exact` and `http10_response_with_codings_is_refused` pin
//! the last two.
//!
//! # Splits, memory, panics
//!
//! Part of the inputs are also fed to Portcullis in two or three pieces (every corpus
//! request at every byte), and must read the same. A counting global allocator bounds
//! what Portcullis's side allocates for one input (4 MiB above where it started), and
//! a panic on that side is a failure reported with the input.
//!
//! # Running longer
//!
//! `benches/fuzz.sh --minutes N` runs the ignored `long_run` test with a seed from the
//! clock. It reads `DIFFERENTIAL_SEED`, `DIFFERENTIAL_INPUTS`, `DIFFERENTIAL_MINUTES`
//! and `DIFFERENTIAL_FIRST` (the first input's number), so a failure printed as
//! `seed S input #N` replays with `DIFFERENTIAL_SEED=S DIFFERENTIAL_FIRST=N
//! DIFFERENTIAL_INPUTS=1`. Failures print the input as a byte string, ready to paste
//! into `tests/differential/corpus.rs`.

#[path = "differential/corpus.rs"]
mod corpus;
#[path = "differential/generate.rs"]
mod generate;
#[path = "differential/hyper_side.rs"]
mod hyper_side;
#[path = "differential/portcullis_side.rs"]
mod portcullis_side;
#[path = "differential/verdict.rs"]
mod verdict;

use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::Method;
use peak_alloc::PeakAlloc;
use portcullis::config::UnderscoreHeaders;
use tokio::runtime::Runtime;

use portcullis_side::{End, Feed, ResponseOutcome};
use verdict::{show, Verdict};

/// Counts the bytes allocated now and at their peak, so that the growth of one
/// Portcullis run can be bounded.
#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// The most one input may make Portcullis's side allocate above where it started.
const MAX_GROWTH: usize = 4 << 20;
/// The seed of the default run: fixed, so that every run reads the same inputs.
const DEFAULT_SEED: u64 = 0x5eed_d1ff;
/// Generated request inputs per default run; one in four also yields a response input.
const DEFAULT_INPUTS: u64 = 40_000;
/// Failures printed in full; the rest are counted.
const FAILURES_SHOWN: usize = 20;

/// One test at a time: the allocator's counters are global, so nothing else may
/// allocate while a Portcullis run is measured.
static SERIAL: Mutex<()> = Mutex::new(());

/// How often a documented difference was seen, and its shortest input.
#[derive(Debug, Default)]
struct Example {
    count: usize,
    shortest: Vec<u8>,
}

impl Example {
    fn add(&mut self, input: &[u8]) {
        if self.count == 0 || input.len() < self.shortest.len() {
            self.shortest = input.to_vec();
        }
        self.count += 1;
    }
}

#[derive(Debug, Default)]
struct Tally {
    requests: usize,
    responses: usize,
    splits: usize,
    agreed: usize,
    both_refused: usize,
    incomplete: usize,
    stricter: BTreeMap<String, Example>,
    laxer: BTreeMap<&'static str, Example>,
    known: BTreeMap<&'static str, Example>,
    failures: Vec<String>,
    failure_count: usize,
    peak_growth: usize,
}

impl Tally {
    fn fail(&mut self, label: &str, input: &[u8], why: &str) {
        self.failure_count += 1;
        if self.failures.len() < FAILURES_SHOWN {
            self.failures
                .push(format!("{label}: {why}\n    input: {}", show(input)));
        }
    }

    fn record(&mut self, kind: &str, label: &str, input: &[u8], verdict: &Verdict) {
        match verdict {
            Verdict::Agreed => self.agreed += 1,
            Verdict::BothRefused => self.both_refused += 1,
            Verdict::Incomplete => self.incomplete += 1,
            Verdict::Stricter(reason) => self
                .stricter
                .entry(format!("{kind}: {reason}"))
                .or_default()
                .add(input),
            Verdict::Laxer(class) => self.laxer.entry(class).or_default().add(input),
            Verdict::Known(class) => self.known.entry(class).or_default().add(input),
            Verdict::Failure(why) => self.fail(label, input, why),
        }
    }

    fn summary(&self, name: &str, elapsed: Duration) -> String {
        let mut out = format!(
            "differential ({name}): {} request inputs, {} response inputs, {} split \
             readings, {:.1?}\n  agreed {}, Portcullis stricter {}, both refused {}, \
             incomplete {}, laxer {}, known findings {}, failures {}; peak allocation \
             growth {} KiB\n",
            self.requests,
            self.responses,
            self.splits,
            elapsed,
            self.agreed,
            self.stricter.values().map(|e| e.count).sum::<usize>(),
            self.both_refused,
            self.incomplete,
            self.laxer.values().map(|e| e.count).sum::<usize>(),
            self.known.values().map(|e| e.count).sum::<usize>(),
            self.failure_count,
            self.peak_growth / 1024,
        );
        let sections: [(&str, Vec<(&str, &Example)>); 3] = [
            (
                "Portcullis stricter",
                self.stricter.iter().map(|(k, e)| (k.as_str(), e)).collect(),
            ),
            (
                "laxer, documented",
                self.laxer.iter().map(|(k, e)| (*k, e)).collect(),
            ),
            (
                "known findings",
                self.known.iter().map(|(k, e)| (*k, e)).collect(),
            ),
        ];
        for (title, entries) in sections {
            if entries.is_empty() {
                continue;
            }
            out.push_str(&format!("  {title}:\n"));
            for (class, example) in entries {
                out.push_str(&format!(
                    "    {:>6}  {class}\n            e.g. {}\n",
                    example.count,
                    show_short(&example.shortest)
                ));
            }
        }
        out
    }
}

/// An example for the summary: long ones cut short.
fn show_short(input: &[u8]) -> String {
    const LONGEST: usize = 240;
    match input.get(..LONGEST) {
        Some(start) if input.len() > LONGEST => {
            format!("{}... ({} bytes)", show(start), input.len())
        }
        _ => show(input),
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Runs `read` (a Portcullis reading), catching a panic and measuring how far the
/// allocator's peak rose above where it started.
fn measured<T>(read: impl FnOnce() -> T) -> (Result<T, String>, usize) {
    ALLOC.reset_peak_usage();
    let base = ALLOC.current_usage();
    let result = panic::catch_unwind(AssertUnwindSafe(read)).map_err(panic_message);
    (result, ALLOC.peak_usage().saturating_sub(base))
}

/// The split points for an input of `len` bytes: one or two, distinct, inside it.
fn split_points(rng: &mut fastrand::Rng, len: usize) -> Vec<usize> {
    if len < 2 {
        return Vec::new();
    }
    let mut points: Vec<usize> = (0..rng.usize(1..=2)).map(|_| rng.usize(1..len)).collect();
    points.sort_unstable();
    points.dedup();
    points
}

/// Splits for a long input: in the middle, before its last byte, just past 64 KiB, and
/// a few at random.
fn boundary_splits(rng: &mut fastrand::Rng, len: usize) -> Vec<Vec<usize>> {
    let mut splits = vec![vec![len / 2], vec![len - 1]];
    splits.extend(
        [65_536, 65_537]
            .into_iter()
            .filter(|&at| at < len)
            .map(|at| vec![at]),
    );
    splits.extend((0..3).map(|_| split_points(rng, len)));
    splits
}

/// Whether two readings of the same bytes came to the same thing (the wording of a
/// refusal aside).
fn same_end(a: &End, b: &End) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

struct Harness {
    runtime: Runtime,
    tally: Tally,
}

impl Harness {
    fn new() -> Self {
        Harness {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime"),
            tally: Tally::default(),
        }
    }

    /// A Portcullis reading, measured: `None` when it panicked or allocated too much
    /// (recorded as a failure).
    fn portcullis<T>(&mut self, label: &str, input: &[u8], read: impl FnOnce() -> T) -> Option<T> {
        let (result, growth) = measured(read);
        self.tally.peak_growth = self.tally.peak_growth.max(growth);
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(panic) => {
                self.tally
                    .fail(label, input, &format!("Portcullis panicked: {panic}"));
                return None;
            }
        };
        if growth > MAX_GROWTH {
            self.tally.fail(
                label,
                input,
                &format!("Portcullis allocated {growth} bytes for one input"),
            );
            return None;
        }
        Some(outcome)
    }

    /// Reads `input` as requests on both sides (and, with `splits`, on Portcullis's in
    /// pieces too); records and returns the verdict.
    fn request(
        &mut self,
        label: &str,
        input: &[u8],
        underscores: UnderscoreHeaders,
        splits: &[Vec<usize>],
    ) -> Option<Verdict> {
        self.tally.requests += 1;
        let whole = self.portcullis(label, input, || {
            portcullis_side::requests(Feed::whole(input), underscores)
        })?;
        for points in splits {
            self.tally.splits += 1;
            let split = self.portcullis(label, input, || {
                portcullis_side::requests(Feed::split(input, points), underscores)
            })?;
            if split.messages != whole.messages || !same_end(&split.end, &whole.end) {
                let why = format!(
                    "split at {points:?} Portcullis read {} message(s), {:?}; whole, {} \
                     message(s), {:?}",
                    split.messages.len(),
                    split.end,
                    whole.messages.len(),
                    whole.end
                );
                self.tally.fail(label, input, &why);
                return None;
            }
        }
        let hyper = self.runtime.block_on(hyper_side::requests(input));
        let mut verdict = verdict::judge_requests(&whole, &hyper, underscores);
        // Refusing a later request is only stricter if Portcullis looked for it where
        // hyper did: hyper, reading from where Portcullis's refused request starts,
        // must read the request it read there in the whole input.
        let at = whole.messages.len();
        if let (Verdict::Stricter(_), Some(&start), Some(seen)) =
            (&verdict, whole.starts.get(at), hyper.seen.get(at))
        {
            if at > 0 {
                let alone = self.runtime.block_on(hyper_side::requests(&input[start..]));
                if alone.seen.first() != Some(seen) {
                    verdict = Verdict::Failure(format!(
                        "request {at} starts at byte {start} for Portcullis; hyper reads \
                         {:?} there, but {seen:?} as its request {at}",
                        alone.seen.first()
                    ));
                }
            }
        }
        self.tally.record("request", label, input, &verdict);
        Some(verdict)
    }

    /// Reads `input` as the response to a `method` request on both sides.
    fn response(
        &mut self,
        label: &str,
        input: &[u8],
        method: Method,
        splits: &[Vec<usize>],
    ) -> Option<Verdict> {
        self.tally.responses += 1;
        let read = |feed| portcullis_side::response(feed, &method, false);
        let whole: ResponseOutcome = self.portcullis(label, input, || read(Feed::whole(input)))?;
        for points in splits {
            self.tally.splits += 1;
            let split = self.portcullis(label, input, || read(Feed::split(input, points)))?;
            if split.response != whole.response || !same_end(&split.end, &whole.end) {
                let why = format!(
                    "split at {points:?} Portcullis read {:?}; whole, {:?}",
                    split.end, whole.end
                );
                self.tally.fail(label, input, &why);
                return None;
            }
        }
        let hyper = self
            .runtime
            .block_on(hyper_side::response(input, method.clone()));
        let verdict = verdict::judge_response(&method, &whole, &hyper);
        self.tally.record("response", label, input, &verdict);
        Some(verdict)
    }

    /// Generated input `index` of `seed`: a request, and for one in four a response.
    fn generated(&mut self, seed: u64, index: u64) {
        let mut rng = generate::rng(seed, index.wrapping_add(u64::MAX / 2));
        let input = generate::request(seed, index);
        let underscores = if index.is_multiple_of(5) {
            UnderscoreHeaders::Drop
        } else {
            UnderscoreHeaders::Allow
        };
        let splits = if index.is_multiple_of(2) {
            vec![split_points(&mut rng, input.len())]
        } else {
            Vec::new()
        };
        let label = format!("seed {seed} input #{index} (request)");
        self.request(&label, &input, underscores, &splits);
        if index.is_multiple_of(4) {
            let input = generate::response(seed, index);
            let method = if index.is_multiple_of(12) {
                Method::HEAD
            } else {
                Method::GET
            };
            let splits = vec![split_points(&mut rng, input.len())];
            let label = format!("seed {seed} input #{index} (response to {method})");
            self.response(&label, &input, method, &splits);
        }
    }

    /// Prints the summary; fails the test on any failure.
    fn finish(self, name: &str, started: Instant) {
        eprintln!("{}", self.tally.summary(name, started.elapsed()));
        assert!(
            self.tally.failures.is_empty(),
            "{} input(s) read differently by Portcullis and hyper (first {}):\n{}",
            self.tally.failure_count,
            self.tally.failures.len(),
            self.tally.failures.join("\n")
        );
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number")),
    )
}

/// Checks that a corpus case marked as a documented difference still reads as one.
fn check_note(
    mismatched: &mut Vec<String>,
    label: &str,
    input: &[u8],
    note: Option<&str>,
    verdict: Option<Verdict>,
) {
    let shown = match (&verdict, note) {
        (Some(Verdict::Known(class) | Verdict::Laxer(class)), Some(note)) if *class == note => {
            return
        }
        (Some(Verdict::Known(class) | Verdict::Laxer(class)), None) => {
            format!("reads as the documented difference {class:?}; mark it in the corpus")
        }
        (_, Some(note)) => format!(
            "is marked as {note:?} but now reads as {verdict:?}: if it was fixed, remove \
             the mark (and the class, once nothing shows it)"
        ),
        _ => return,
    };
    mismatched.push(format!("{label} {}: {shown}", show(input)));
}

#[test]
fn hand_written_corpus() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let started = Instant::now();
    let mut harness = Harness::new();
    let mut mismatched = Vec::new();
    for (at, &(input, note)) in corpus::REQUESTS.iter().enumerate() {
        // Split in two at every byte, and read with names with `_` both kept and dropped.
        let splits: Vec<Vec<usize>> = (1..input.len()).map(|point| vec![point]).collect();
        let label = format!("corpus request #{at}");
        let verdict = harness.request(&label, input, UnderscoreHeaders::Allow, &splits);
        check_note(&mut mismatched, &label, input, note, verdict);
        harness.request(&label, input, UnderscoreHeaders::Drop, &[]);
    }
    for (at, &(input, note)) in corpus::RESPONSES.iter().enumerate() {
        let splits: Vec<Vec<usize>> = (1..input.len()).map(|point| vec![point]).collect();
        let label = format!("corpus response #{at}");
        let verdict = harness.response(&label, input, Method::GET, &splits);
        check_note(&mut mismatched, &label, input, note, verdict);
        harness.response(&label, input, Method::HEAD, &[]);
    }
    // Around the limits: long inputs, so split at a few points only.
    let mut rng = fastrand::Rng::with_seed(DEFAULT_SEED);
    for (at, (input, note)) in corpus::boundary_requests().iter().enumerate() {
        let splits = boundary_splits(&mut rng, input.len());
        let label = format!("boundary request #{at}");
        let verdict = harness.request(&label, input, UnderscoreHeaders::Allow, &splits);
        check_note(&mut mismatched, &label, input, *note, verdict);
    }
    for (at, (input, note)) in corpus::boundary_responses().iter().enumerate() {
        let splits = boundary_splits(&mut rng, input.len());
        let label = format!("boundary response #{at}");
        let verdict = harness.response(&label, input, Method::GET, &splits);
        check_note(&mut mismatched, &label, input, *note, verdict);
    }
    assert!(mismatched.is_empty(), "{}", mismatched.join("\n"));
    harness.finish("hand-written corpus", started);
}

/// `MAX_TRAILERS_SIZE` (16,384 bytes, each line with its CRLF and the blank line
/// included) holds exactly: the largest trailer section read is 16,384 bytes.
#[test]
fn trailer_section_limit_is_exact() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let accepted = |size: usize| {
        let input = [
            &b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"
                [..],
            &corpus::trailer_section(size),
        ]
        .concat();
        let read = portcullis_side::requests(Feed::whole(&input), UnderscoreHeaders::Allow);
        read.end == End::Complete && read.messages.len() == 1
    };
    let largest = (16_300..16_500).filter(|&size| accepted(size)).max();
    assert_eq!(largest, Some(16_384));
}

/// An HTTP/1.0 response with `Transfer-Encoding` has faulty framing (RFC 9112 §6.1):
/// refused, so its connection never goes back to the pool.
#[test]
fn http10_response_with_codings_is_refused() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let input = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let read = portcullis_side::response(Feed::whole(input), &Method::GET, false);
    assert!(read.response.is_none());
    assert!(matches!(read.end, End::Rejected(_)), "{:?}", read.end);
}

#[test]
fn generated_inputs() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let started = Instant::now();
    let mut harness = Harness::new();
    for index in 0..DEFAULT_INPUTS {
        harness.generated(DEFAULT_SEED, index);
    }
    harness.finish("generated, fixed seed", started);
}

/// The long run: `benches/fuzz.sh --minutes N`, or the environment variables in the
/// module documentation.
#[test]
#[ignore = "long: run through benches/fuzz.sh"]
fn long_run() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let started = Instant::now();
    let seed = env_u64("DIFFERENTIAL_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |t| t.as_nanos() as u64)
    });
    let first = env_u64("DIFFERENTIAL_FIRST").unwrap_or(0);
    let inputs = env_u64("DIFFERENTIAL_INPUTS").unwrap_or(2_000_000);
    let deadline = env_u64("DIFFERENTIAL_MINUTES").map(|m| started + Duration::from_secs(m * 60));
    eprintln!(
        "differential long run: seed {seed}, inputs #{first} to #{}, {} (replay one with \
         DIFFERENTIAL_SEED={seed} DIFFERENTIAL_FIRST=N DIFFERENTIAL_INPUTS=1)",
        first + inputs - 1,
        deadline.map_or("no time limit".to_owned(), |_| format!(
            "at most {} minute(s)",
            env_u64("DIFFERENTIAL_MINUTES").unwrap_or(0)
        ))
    );
    let mut harness = Harness::new();
    for index in first..first.saturating_add(inputs) {
        if deadline.is_some_and(|deadline| Instant::now() >= deadline)
            || harness.tally.failure_count >= FAILURES_SHOWN
        {
            break;
        }
        harness.generated(seed, index);
        if index > first && (index - first).is_multiple_of(100_000) {
            eprintln!(
                "  {} inputs, {} failures, {:.0?}",
                index - first,
                harness.tally.failure_count,
                started.elapsed()
            );
        }
    }
    harness.finish(&format!("long run, seed {seed}"), started);
}

//! The fuzz target's invariants over a fixed-seed stream of mutated
//! definitions, so every `cargo test` fuzzes a little without nightly.

#[path = "support/invariants.rs"]
mod invariants;

const SEEDS: &[&str] = &[
    include_str!("../examples/guests/web.toml"),
    include_str!("../examples/host.toml"),
    "[boot]\nkernel = \"k\"\n[[net]]\nbridge = \"br0\"\nmac = \"52:54:00:12:34:56\"\n",
    "machine = { vcpus = 0x4 }\nboot.kernel = 'k'\ndisk = [{ path = \"LABEL=x\" }]\n",
    "[[bridge]]\nname = \"br0\"\naddress = \"fd00::2/64\"\ngateway = \"fe80::1\"\n",
];

/// Fragments that steer mutations towards the parser's corners.
const TOKENS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    "\"",
    "'''",
    "\"\"\"",
    "=",
    ",",
    ".",
    "\n",
    "\r\n",
    "#",
    "\\u00e9",
    "\\",
    "0x",
    "0o7",
    "0b1",
    "-",
    "+",
    "_",
    "1e999",
    "nan",
    "inf",
    "true",
    "1979-05-27T07:32:00Z",
    "é",
    "\u{feff}",
    "\0",
    "\t",
    "[[disk]]",
    "[[net]]",
    "[boot]",
    "[machine]",
    "kernel",
    "vcpus",
    "mac",
    "path",
    "LABEL=",
    "PARTLABEL=",
    "UUID=",
    "/dev/",
    "99999999999999999999",
    "a.b.c",
    "\"\u{1F600}\"",
];

/// xorshift64*: a fixed seed makes any failure reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        // The remainder is below `n`, so it fits a usize again.
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(6) {
            0 if !input.is_empty() => {
                let i = at.min(input.len() - 1);
                input[i] ^= 1 << rng.below(8);
            }
            1 if !input.is_empty() => {
                let end = (at + rng.below(8)).min(input.len());
                input.drain(at.min(end)..end);
            }
            2 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                input.splice(at..at, token.bytes());
            }
            3 if !input.is_empty() => {
                let start = rng.below(input.len());
                let end = (start + rng.below(32)).min(input.len());
                let chunk = input[start..end].to_vec();
                input.splice(at..at, chunk);
            }
            4 => input.truncate(at),
            _ => input.insert(at, rng.byte()),
        }
    }
}

#[test]
fn mutated_definitions_never_panic_and_errors_point_inside_the_text() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..4000 {
        let seed = SEEDS[round % SEEDS.len()];
        let mut input = seed.as_bytes().to_vec();
        // Stack several rounds of mutations so some inputs drift far.
        for _ in 0..=rng.below(6) {
            mutate(&mut rng, &mut input);
            invariants::check(&input);
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    const ALPHABET: &[u8] = b"[]{}=\"'.,#\n abc019-_xte";
    let mut rng = Rng(42);
    for _ in 0..2000 {
        let len = rng.below(200);
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                // Mostly printable TOML-ish bytes, so UTF-8 decoding passes.
                let b = ALPHABET[rng.below(ALPHABET.len())];
                if rng.below(50) == 0 {
                    rng.byte()
                } else {
                    b
                }
            })
            .collect();
        invariants::check(&bytes);
    }
}

#[test]
fn pathological_nesting_is_rejected_not_overflowed() {
    let deep = 100_000;
    for text in [
        format!("a = {}{}", "[".repeat(deep), "]".repeat(deep)),
        format!("a = {}", "{ b = ".repeat(deep)),
        format!("[{}]", vec!["a"; deep].join(".")),
        format!("{} = 1", vec!["a"; deep].join(".")),
        "[[".repeat(deep),
    ] {
        invariants::check(text.as_bytes());
    }
}

/// Syntactically valid documents built from the formats' own vocabulary,
/// so most inputs get past the TOML parser into the validation code.
#[test]
fn generated_documents_never_panic() {
    const HEADERS: &[&str] = &[
        "",
        "[machine]",
        "[boot]",
        "[[disk]]",
        "[[net]]",
        "[rng]",
        "[lifecycle]",
        "[[bridge]]",
        "[[mount]]",
        "[boot.x]",
        "[[machine]]",
        "[disk]",
    ];
    const KEYS: &[&str] = &[
        "vcpus",
        "memory_mib",
        "kernel",
        "initrd",
        "cmdline",
        "path",
        "read_only",
        "bridge",
        "tap",
        "mac",
        "enabled",
        "restart",
        "autostart",
        "hostname",
        "shutdown_timeout_s",
        "guests",
        "name",
        "interfaces",
        "address",
        "gateway",
        "source",
        "target",
        "fstype",
        "boot",
        "disk",
        "net",
        "x.y",
    ];
    const VALUES: &[&str] = &[
        "0",
        "1",
        "-1",
        "32",
        "33",
        "16",
        "1048576",
        "1048577",
        "0x7fffffffffffffff",
        "-9223372036854775808",
        "1.5",
        "nan",
        "true",
        "false",
        "1979-05-27",
        "\"\"",
        "\"k\"",
        "\"/dev/sda1\"",
        "\"/dev/\"",
        "\"LABEL=\"",
        "\"LABEL=x\"",
        "\"PARTLABEL=y\"",
        "\"UUID=z\"",
        "\"52:54:00:12:34:56\"",
        "\"ff:ff:ff:ff:ff:ff\"",
        "\"00:00:00:00:00:00\"",
        "\"br0\"",
        "\"a-very-long-interface\"",
        "\"10.0.0.2/24\"",
        "\"10.0.0.1\"",
        "\"fe80::1\"",
        "\"::/0\"",
        "\"10.0.0.2/0\"",
        "\"10.0.0.2/32\"",
        "\"/\"",
        "\"/proc\"",
        "\"/data\"",
        "\"/data/../x\"",
        "\"always\"",
        "\"never\"",
        "\"on-failure\"",
        "[]",
        "[\"eth0\"]",
        "[\"web\", \"web\"]",
        "[1]",
        "{}",
        "{ path = \"a\" }",
        "[{ path = \"a\" }]",
        "\"\\u0000\"",
        "\"é\"",
    ];
    let mut rng = Rng(7);
    for _ in 0..3000 {
        let mut doc = String::new();
        for _ in 0..rng.below(8) {
            doc.push_str(HEADERS[rng.below(HEADERS.len())]);
            doc.push('\n');
            for _ in 0..rng.below(5) {
                let key = KEYS[rng.below(KEYS.len())];
                let value = VALUES[rng.below(VALUES.len())];
                doc.push_str(&format!("{key} = {value}\n"));
            }
        }
        invariants::check(doc.as_bytes());
    }
}

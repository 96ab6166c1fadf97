//! The fuzz targets: one parser each, through psi's public API, with the invariants that
//! are cheap to check beyond "no panic". A broken invariant is an `assert!`, so the driver
//! treats it as a crash.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use hyper::Method;
use psi::cache::format::{self, Header, Payload, TAG_TPM, VERSION_AUTHENTICATED};
use psi::cache::Entries;
use psi::config::{Overrides, Settings};
use psi::crypto::{aead, envelope::Envelope};
use psi::error::Error;
use psi::import;
use psi::provider::infisical::cert;
use psi::secret::{Mapping, SecretId, MAX_ID_LEN};
use psi::server::routes::{route, Route};

/// The fixed AES key of the `cache` and `envelope` targets.
const KEY: [u8; aead::KEY_LEN] = [7; aead::KEY_LEN];
/// A key that must never open what [`KEY`] sealed.
const WRONG_KEY: [u8; aead::KEY_LEN] = [8; aead::KEY_LEN];
/// The version 2 TPM header, the associated data of what the targets seal.
const HEADER: Header = Header {
    version: VERSION_AUTHENTICATED,
    tag: TAG_TPM,
};
/// The wrapped-key length of an RSA-2048 envelope.
const RSA_2048: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Route,
    Id,
    Mapping,
    Envelope,
    Cache,
    Config,
    Env,
    Quadlet,
    Pem,
}

/// A target ready to run: its own seeds and scratch state.
pub trait Fuzz {
    /// Seeds built in code (on top of the corpus directory).
    fn seeds(&self) -> Vec<Vec<u8>> {
        Vec::new()
    }
    fn run(&mut self, input: &[u8]);
}

impl Target {
    pub const ALL: [Target; 9] = [
        Target::Route,
        Target::Id,
        Target::Mapping,
        Target::Envelope,
        Target::Cache,
        Target::Config,
        Target::Env,
        Target::Quadlet,
        Target::Pem,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Route => "route",
            Target::Id => "id",
            Target::Mapping => "mapping",
            Target::Envelope => "envelope",
            Target::Cache => "cache",
            Target::Config => "config",
            Target::Env => "env",
            Target::Quadlet => "quadlet",
            Target::Pem => "pem",
        }
    }

    /// Tokens the mutator inserts: the syntax each parser branches on.
    pub fn dictionary(self) -> &'static [&'static [u8]] {
        match self {
            Target::Route | Target::Id => &[
                b"/lookup/",
                b"/store/",
                b"/delete/",
                b"/healthz",
                b"/list",
                b"%2F",
                b"%2e",
                b"%5C",
                b"%00",
                b"%C3%A9",
                b"%",
                b"..",
                b"/",
            ],
            Target::Mapping | Target::Cache => &[
                b"\"provider\":",
                b"\"infisical\"",
                b"\"entries\":",
                b"\"hmac_key\":",
                b"\"version\":2",
                b"\"version\":1",
                b"\\u0000",
                b"\\ud800",
                b"1e400",
                b"-0.0",
                b"null",
                b"[]",
                b"{}",
                b"\"\"",
                b"AAAA",
                b"==",
            ],
            Target::Envelope => &[b"\x01\x00", b"\x00\x00", b"\xff\xff", b"\x00\x1c"],
            Target::Config => &[
                b"providers:\n",
                b"infisical:\n",
                b"nitrokeyhsm:\n",
                b"systemd_creds:\n",
                b"workloads:\n",
                b"tls:\n",
                b"certs:\n",
                b"  ",
                b"- ",
                b": ",
                b"~",
                b"!!binary",
                b"&a",
                b"*a",
                b"<<: ",
                b"0o600",
                b"30s",
                b"90d",
                b"'",
                b"\"",
            ],
            Target::Env | Target::Quadlet => &[
                b"export ",
                b"Environment=",
                b"Secret=",
                b"[Container]\n",
                b"\\\n",
                b"\"",
                b"'",
                b"\\",
                b",type=env,target=",
                b"=",
                b"#",
                b"$",
                b"${A}",
            ],
            Target::Pem => &[
                b"-----BEGIN CERTIFICATE-----\n",
                b"-----END CERTIFICATE-----\n",
                b"-----BEGIN PRIVATE KEY-----\n",
                b"MII",
                b"=\n",
                b"\n",
            ],
        }
    }

    pub fn setup(self) -> Box<dyn Fuzz> {
        match self {
            Target::Route => Box::new(RouteTarget),
            Target::Id => Box::new(IdTarget),
            Target::Mapping => Box::new(MappingTarget {
                entries: Entries::empty(),
            }),
            Target::Envelope => Box::new(EnvelopeTarget::new()),
            Target::Cache => Box::new(CacheTarget),
            Target::Config => Box::new(ConfigTarget(Scratch::new("config.yaml"))),
            Target::Env => Box::new(EnvTarget),
            Target::Quadlet => Box::new(QuadletTarget),
            Target::Pem => Box::new(PemTarget(Scratch::new("cert.pem"))),
        }
    }
}

/// `bytes` percent-encoded, every byte: the form that must decode to exactly `bytes`.
fn percent_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

/// The route parser. Input: a method selector byte, then the path. Invariant: an ID the
/// router hands out passes the ID rules, and the fully percent-encoded form of the same ID
/// routes to the same place.
struct RouteTarget;

impl Fuzz for RouteTarget {
    fn run(&mut self, input: &[u8]) {
        let Some((&selector, path)) = input.split_first() else {
            return;
        };
        let methods = [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::DELETE,
            Method::PUT,
        ];
        let method = &methods[usize::from(selector) % methods.len()];
        let path = String::from_utf8_lossy(path);
        let id = match route(method, &path) {
            Ok(Route::Lookup(id)) => (id, "/lookup/"),
            Ok(Route::Store(id)) => (id, "/store/"),
            Ok(Route::Delete(id)) => (id, "/delete/"),
            _ => return,
        };
        let (id, prefix) = id;
        assert_eq!(SecretId::parse(id.as_str()).as_ref(), Ok(&id));
        let encoded = format!("{prefix}{}", percent_encode(id.as_str().as_bytes()));
        let again = route(method, &encoded).expect("an accepted ID routes again when encoded");
        let same =
            matches!(&again, Route::Lookup(i) | Route::Store(i) | Route::Delete(i) if *i == id);
        assert!(same, "{encoded} routed to {again:?}, not to {id:?}");
    }
}

/// The secret ID rules. Invariants: an accepted ID is safe as a file name in the state
/// directory; the router accepts exactly the IDs the rules accept (through percent-encoding,
/// which carries any bytes) and yields the same ID.
struct IdTarget;

impl Fuzz for IdTarget {
    fn run(&mut self, input: &[u8]) {
        let text = String::from_utf8_lossy(input);
        let parsed = SecretId::parse(&text);
        let routed = route(
            &Method::GET,
            &format!("/lookup/{}", percent_encode(text.as_bytes())),
        );
        match parsed {
            Ok(id) => {
                let raw = id.as_str();
                assert_eq!(raw, text);
                assert!(!raw.is_empty() && raw.len() <= MAX_ID_LEN);
                assert!(raw != "." && raw != ".." && !raw.starts_with('.'));
                assert!(!raw.contains(['/', '\\', '\0']));
                assert!(matches!(routed, Ok(Route::Lookup(ref same)) if *same == id));
                if !raw.contains('%') {
                    // Without a '%', the plain path is its own encoding.
                    let plain = route(&Method::GET, &format!("/lookup/{raw}"));
                    assert!(matches!(plain, Ok(Route::Lookup(ref same)) if *same == id));
                }
            }
            Err(_) => assert!(matches!(routed, Err(Error::InvalidId(_)))),
        }
    }
}

/// Mapping JSON. Invariants: what psi writes parses back to the same mapping; the canonical
/// form (the cache's key material) is a fixed point; accessors never panic.
struct MappingTarget {
    entries: Entries,
}

impl Fuzz for MappingTarget {
    fn run(&mut self, input: &[u8]) {
        let Ok(mapping) = Mapping::parse(input) else {
            return;
        };
        let written = mapping.to_bytes();
        let reread = Mapping::parse(&written).expect("psi reads the mapping it wrote");
        assert!(reread == mapping, "round trip changed the mapping");
        assert_eq!(reread.to_bytes(), written);
        let canonical = mapping.canonical();
        let from_canonical = Mapping::parse(canonical.as_bytes()).expect("canonical parses");
        assert_eq!(from_canonical.canonical(), canonical);
        let _ = (mapping.has_known_shape(), mapping.provider());
        for key in ["project", "path", "key", "blob", "name", "payload"] {
            let _ = mapping.opt_str_field(key);
        }
        let _ = self.entries.digest(&mapping);
    }
}

/// The Nitrokey envelope with the key unwrapped: [`Envelope::parse`], the key-size check and
/// the AES-GCM part. Invariants: the parts are where the length prefix says; only an AES-GCM
/// part sealed with [`KEY`] (a seed's, unmutated) opens. The wrapped key is not covered by
/// AES-GCM (RSA-OAEP checks it when the token unwraps it), so it may change.
struct EnvelopeTarget {
    seeds: Vec<Vec<u8>>,
    sealed: HashSet<Vec<u8>>,
}

impl EnvelopeTarget {
    fn new() -> EnvelopeTarget {
        // A stand-in for the RSA-wrapped key (unwrapping it is the token's job, not the
        // parser's) in front of real AES-GCM parts of a few plaintexts.
        let plaintexts: [&[u8]; 3] = [b"", b"s3cret", &[0xAB; 300]];
        let sealed: HashSet<Vec<u8>> = plaintexts
            .iter()
            .enumerate()
            .map(|(i, plaintext)| seal_with_nonce([i as u8; aead::NONCE_LEN], plaintext))
            .collect();
        let seeds = sealed
            .iter()
            .map(|part| {
                let mut out = (RSA_2048 as u16).to_be_bytes().to_vec();
                out.extend_from_slice(&[0x5A; RSA_2048]);
                out.extend_from_slice(part);
                out
            })
            .collect();
        EnvelopeTarget { seeds, sealed }
    }
}

/// `aead::seal`'s layout (`nonce || ciphertext || tag`) with a fixed nonce instead of a
/// random one, so the seeds are the same in every run and a saved input replays the same.
fn seal_with_nonce(nonce: [u8; aead::NONCE_LEN], plaintext: &[u8]) -> Vec<u8> {
    let mut tag = [0u8; aead::TAG_LEN];
    let cipher = openssl::symm::Cipher::aes_256_gcm();
    let ciphertext = openssl::symm::encrypt_aead(
        cipher,
        &KEY,
        Some(&nonce),
        &HEADER.aad(),
        plaintext,
        &mut tag,
    )
    .expect("AES-GCM");
    [&nonce[..], &ciphertext, &tag].concat()
}

impl Fuzz for EnvelopeTarget {
    fn seeds(&self) -> Vec<Vec<u8>> {
        self.seeds.clone()
    }

    fn run(&mut self, input: &[u8]) {
        let Ok(envelope) = Envelope::parse(input) else {
            return;
        };
        let declared = usize::from(u16::from_be_bytes([input[0], input[1]]));
        assert_eq!(envelope.wrapped_key(), &input[2..2 + declared]);
        assert_eq!(
            envelope.check_key_size(RSA_2048).is_ok(),
            declared == RSA_2048
        );
        let opened = envelope.open_with_aad(&KEY, &HEADER.aad()).is_ok();
        let part = &input[2 + declared..];
        assert_eq!(opened, self.sealed.contains(part), "AES-GCM authentication");
        assert!(envelope.open_with_aad(&WRONG_KEY, &HEADER.aad()).is_err());
    }
}

/// `cache.enc`, read as `psi serve` reads it (header, AES-GCM, payload JSON). The input is
/// used twice: as a whole file, which must never authenticate; and as the plaintext payload,
/// sealed with [`KEY`] so the payload parser sees it. Invariants: a sealed file opens to its
/// plaintext, and not with another key or with one bit flipped; a payload that decodes,
/// re-encoded as psi writes it, decodes to the same key and entries.
struct CacheTarget;

/// What `cache::load` does with the file's bytes, the key backend being the TPM's.
fn open_cache(key: &[u8; aead::KEY_LEN], file: &[u8]) -> Result<Vec<u8>, String> {
    let path = Path::new("cache.enc");
    let header = Header::parse(path, file)?;
    header.check(path, TAG_TPM)?;
    let plaintext = format::open_tpm(key, &header.aad(), &file[format::HEADER_LEN..])?;
    Ok(plaintext.to_vec())
}

impl Fuzz for CacheTarget {
    fn run(&mut self, input: &[u8]) {
        assert!(open_cache(&KEY, input).is_err(), "forged cache file opened");

        let mut file = HEADER.to_bytes().to_vec();
        file.extend(format::seal_tpm(&KEY, &HEADER.aad(), input).expect("seal"));
        assert_eq!(open_cache(&KEY, &file).as_deref(), Ok(input));
        assert!(open_cache(&WRONG_KEY, &file).is_err());
        let hash = openssl::sha::sha256(input);
        let at = usize::from(u16::from_le_bytes([hash[0], hash[1]])) % file.len();
        file[at] ^= 1 << (hash[2] % 8);
        assert!(
            open_cache(&KEY, &file).is_err(),
            "bit {at} flipped went unnoticed"
        );

        if let Ok(Payload::Current {
            hmac_key, entries, ..
        }) = format::decode_payload(input)
        {
            let pairs: Vec<(String, &[u8])> = entries
                .iter()
                .map(|(digest, value)| (format::digest_hex(digest), value.expose()))
                .collect();
            let encoded = format::encode_payload(hmac_key.as_ref(), &pairs, 1_700_000_000);
            let Ok(Payload::Current {
                hmac_key: key_again,
                entries: again,
                foreign_keys: 0,
            }) = format::decode_payload(&encoded)
            else {
                panic!("psi cannot read the payload it wrote");
            };
            assert!(key_again == hmac_key);
            assert_eq!(again.len(), entries.len());
            for (digest, value) in &entries {
                assert_eq!(again.get(digest).map(|v| v.expose()), Some(value.expose()));
            }
        }
    }
}

/// A file in a private temporary directory, rewritten for each input, for the readers that
/// take a path. In `/dev/shm` where there is one: a disk file system under load took
/// milliseconds per write, a hundred times the parsers' time.
struct Scratch {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("a temporary directory");
        let path = dir.path().join(name);
        Scratch { _dir: dir, path }
    }

    fn write(&self, input: &[u8]) -> &Path {
        std::fs::write(&self.path, input).expect("write the scratch file");
        &self.path
    }
}

/// `config.yaml`, loaded and validated as every command loads it (an unprivileged user's
/// scope; no credentials directory, no environment).
struct ConfigTarget(Scratch);

impl Fuzz for ConfigTarget {
    fn run(&mut self, input: &[u8]) {
        let overrides = Overrides {
            config: Some(self.0.write(input).to_owned()),
            socket: None,
        };
        let env = |name: &str| match name {
            "HOME" => Some(OsString::from("/home/fuzz")),
            "XDG_RUNTIME_DIR" => Some(OsString::from("/run/user/1000")),
            _ => None,
        };
        let _ = Settings::load(&overrides, &env, 1000);
    }
}

/// Keys as the import readers accept them (their own rule is private).
fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The env-file reader. Invariant: every key it returns is a valid key.
struct EnvTarget;

impl Fuzz for EnvTarget {
    fn run(&mut self, input: &[u8]) {
        let (found, _) = import::parse_env(&String::from_utf8_lossy(input), "fuzz");
        assert!(found.iter().all(|f| valid_key(&f.key)));
    }
}

/// The quadlet reader. Invariant: every key it returns is a valid key.
struct QuadletTarget;

impl Fuzz for QuadletTarget {
    fn run(&mut self, input: &[u8]) {
        let (found, _, _) = import::parse_quadlet(&String::from_utf8_lossy(input), "fuzz");
        assert!(found.iter().all(|f| valid_key(&f.key)));
    }
}

/// The PEM certificate reader of `psi infisical tls` (renewal decisions rest on it).
struct PemTarget(Scratch);

impl Fuzz for PemTarget {
    fn run(&mut self, input: &[u8]) {
        if let Ok(info) = cert::read_cert(self.0.write(input)) {
            assert!(!info.serial.is_empty());
        }
    }
}

//! Settings end to end: the real binary with a file, `HALLEY_*` variables
//! and flags, read back through `halley serve --print-config` (which exits
//! without serving). Variables are set on the child process only, so these
//! tests never touch their own environment.

mod common;

use std::process::{Command, Output};

use common::{config_file, Server};

/// `halley` with `args` and exactly the `HALLEY_*` variables of `env`.
fn halley(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_halley"));
    command.args(args).env("NO_COLOR", "1");
    for (key, _) in std::env::vars() {
        if key.starts_with("HALLEY_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command.output().expect("running halley")
}

/// `halley serve --print-config ARGS`: its stdout, asserting success.
fn print_config(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec!["serve", "--print-config"];
    all.extend_from_slice(args);
    let output = halley(&all, env);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{output:?}");
    stdout
}

/// `halley serve --print-config ARGS` fails; its stderr.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec!["serve", "--print-config"];
    all.extend_from_slice(args);
    let output = halley(&all, env);
    assert!(!output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn defaults_then_file_then_environment_then_flags() {
    let file = config_file("timeout = 5000\nmax-interval = 3000\ninterval = 1\n");
    let file_name = file.to_str().unwrap();
    let printed = print_config(
        &["--config", file_name, "--timeout", "7000"],
        &[("HALLEY_TIMEOUT", "6000"), ("HALLEY_MAX_INTERVAL", "4000")],
    );
    for line in [
        "timeout = 7000 # flag --timeout".to_owned(),
        "max-interval = 4000 # env HALLEY_MAX_INTERVAL".to_owned(),
        format!("interval = 1 # file {file_name}"),
        "path = \"/cometd\" # default".to_owned(),
    ] {
        assert!(printed.lines().any(|l| l == line), "{line:?} in\n{printed}");
    }
    // HALLEY_CONFIG names the file as --config does.
    let printed = print_config(&[], &[("HALLEY_CONFIG", file_name)]);
    assert!(printed.contains("timeout = 5000 # file"), "{printed}");
}

#[test]
fn errors_name_the_variable_the_flag_or_the_file_and_key() {
    let stderr = refused(&[], &[("HALLEY_TIMEOUT", "xyz")]);
    assert!(
        stderr.contains("the environment variable HALLEY_TIMEOUT") && stderr.contains("\"xyz\""),
        "{stderr}"
    );
    let stderr = refused(&["--max-queue", "lots"], &[]);
    assert!(stderr.contains("the flag --max-queue"), "{stderr}");
    let stderr = refused(&[], &[("HALLEY_PATH", "cometd")]);
    assert!(
        stderr.contains("(from the environment variable HALLEY_PATH)"),
        "a value refused by validation names its source too: {stderr}"
    );
    let file = config_file("websocket = \"yes\"\n");
    let stderr = refused(&["--config", file.to_str().unwrap()], &[]);
    assert!(
        stderr.contains(file.to_str().unwrap()) && stderr.contains("websocket = \"yes\""),
        "{stderr}"
    );
}

#[test]
fn print_config_reads_back_as_the_same_settings() {
    let file = config_file(
        "max-publish-rate = 2.5\noverflow-policy = \"drop-newest\"\n\
         [jwt]\nissuer = \"me\"\nallow-anonymous = true\nanonymous-subscribe = [\"/public/**\"]\n\
         [[lazy]]\npattern = \"/news/**\"\nmax-lazy-timeout = 100\n\
         [[history]]\npattern = \"/chat/*\"\nmax-messages = 10\n\
         [[remote-adapter]]\nname = \"feed\"\nchannels = [\"/stocks/*\"]\nconnect = \"feed:7001\"\n",
    );
    let first = print_config(
        &[
            "--config",
            file.to_str().unwrap(),
            "--max-lazy-timeout",
            "250",
        ],
        &[("HALLEY_JWT_LEEWAY_S", "5"), ("HALLEY_WEBSOCKET", "false")],
    );
    assert!(first.contains("\n[jwt]\n"), "{first}");
    assert!(
        first.contains("leeway-s = 5 # env HALLEY_JWT_LEEWAY_S"),
        "{first}"
    );
    assert!(
        first.contains("max-lazy-timeout = 250 # flag --max-lazy-timeout"),
        "{first}"
    );
    assert!(first.contains("[[remote-adapter]]"), "{first}");
    let again = config_file(&first);
    let second = print_config(&["--config", again.to_str().unwrap()], &[]);
    // The same values, now all from the second file (or still default).
    let values = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(" # ").next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(values(&first), values(&second), "{first}\n---\n{second}");
    assert!(second.contains("leeway-s = 5 # file"), "{second}");
}

#[test]
fn secrets_are_masked() {
    let printed = print_config(
        &[
            "--webhook-url",
            "http://auth.internal/",
            "--webhook-secret",
            "hush",
        ],
        &[("HALLEY_API_KEYS", "key-one-0123456789,key-two-0123456789")],
    );
    assert!(
        !printed.contains("hush") && !printed.contains("key-one"),
        "{printed}"
    );
    assert!(
        printed.contains("secret = \"********\" # flag --webhook-secret"),
        "{printed}"
    );
    assert!(printed.contains("api-keys = [\"********\", \"********\"] # env HALLEY_API_KEYS"));
}

#[test]
fn publish_reads_the_keys_serve_reads() {
    let keys = [(
        "HALLEY_API_KEYS",
        "first-key-0123456789,second-key-0123456789",
    )];
    let server = Server::start_with_env("127.0.0.1:0", &[], &keys);
    let args = [
        "publish",
        "--url",
        &server.origin,
        "--channel",
        "/x",
        "--data",
        "1",
    ];
    let output = halley(&args, &keys);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("\"delivered\":0"));

    let output = halley(&args, &[("HALLEY_API_KEY", "first-key-0123456789")]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("HALLEY_API_KEY is now HALLEY_API_KEYS"),
        "{stderr}"
    );
}

#[test]
fn listen_takes_a_port_or_a_host_name() {
    // A bare port listens on the loopback interface, from a flag, a
    // variable or the file.
    let printed = print_config(&["--listen", "9090", "--admin-listen", "9091"], &[]);
    assert!(
        printed.contains("listen = \"127.0.0.1:9090\" # flag --listen")
            && printed.contains("admin-listen = \"127.0.0.1:9091\" # flag --admin-listen"),
        "{printed}"
    );
    let printed = print_config(&[], &[("HALLEY_LISTEN", "localhost:9092")]);
    assert!(printed.contains("listen = \"127.0.0.1:9092\""), "{printed}");
    let file = config_file("listen = \"localhost:9093\"\nadmin-listen = \"off\"\n");
    let printed = print_config(&["--config", file.to_str().unwrap()], &[]);
    assert!(printed.contains("listen = \"127.0.0.1:9093\""), "{printed}");
    // Anything else: the form expected, and where the value came from.
    let stderr = refused(&["--listen", "localhost"], &[]);
    assert!(
        stderr.contains("the flag --listen") && stderr.contains("HOST:PORT or PORT"),
        "{stderr}"
    );
    let stderr = refused(&["--admin-listen", "nowhere"], &[]);
    assert!(stderr.contains("HOST:PORT, PORT or off"), "{stderr}");
    // And it serves there: `localhost:0` is a free port on 127.0.0.1.
    let server = Server::start_at("localhost:0", &[]);
    assert!(
        server.url.starts_with("http://127.0.0.1:"),
        "{}",
        server.url
    );
}

/// Issue 13: the Metadata Adapter's settings were only checked when the
/// server bound, and reported as "starting the server on ADDR: ...". They
/// are a configuration error, found before anything binds.
#[test]
fn metadata_adapter_mistakes_are_configuration_errors_found_before_binding() {
    let serve = |args: &[&str]| {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0", "--admin-listen", "off"];
        all.extend_from_slice(args);
        let output = halley(&all, &[]);
        assert!(!output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let missing = serve(&["--jwt-rs256-public-key", "/nonexistent/key.pem"]);
    assert!(
        missing.contains("invalid configuration: jwt.rs256-public-key: cannot read"),
        "{missing}"
    );
    assert!(!missing.contains("starting the server"), "{missing}");

    // RFC 7518 §3.2: an HS256 key at least as long as the hash.
    let short = serve(&["--jwt-hs256-secret", "change-me"]);
    assert!(
        short.contains("jwt.hs256-secret is 9 bytes; it must be at least 32"),
        "{short}"
    );
    assert!(
        !short.contains("change-me"),
        "the secret is not shown: {short}"
    );

    // Patterns for anonymous sessions that are refused anyway: a mistake.
    let anonymous = serve(&[
        "--jwt-hs256-secret",
        "a-secret-of-at-least-32-bytes-for-hs256",
        "--jwt-anonymous-subscribe",
        "/public/**",
    ]);
    assert!(
        anonymous.contains("unless jwt.allow-anonymous = true"),
        "{anonymous}"
    );

    let webhook = serve(&["--webhook-url", "not a url"]);
    assert!(
        webhook.contains("invalid configuration: webhook.url"),
        "{webhook}"
    );
}

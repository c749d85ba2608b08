//! The `storebox` command: parses the command line and calls into the library.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use storebox::auth::{self, Role};
use storebox::config::Config;
use storebox::db::Db;
use storebox::devices::registry;
use storebox::ops::{audit, logging};

#[derive(Parser)]
#[command(
    name = "storebox",
    version = storebox::VERSION,
    about = "Store-in-a-box appliance: device broker, local catalog and pricing, HQ sync, staff web UI"
)]
struct Cli {
    /// Config file (TOML). Without it: /etc/storebox/storebox.toml (hq.toml for `storebox hq`)
    /// when that exists (an installed package), else embedded defaults. STOREBOX_SECTION__KEY
    /// environment variables override either.
    #[arg(long, short, global = true, env = "STOREBOX_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the store appliance: MQTT broker, HTTP (UI, API, metrics), SQLite, sync.
    Serve,
    /// Validate the configuration; exits non-zero naming the key and the problem.
    CheckConfig,
    /// Manage device credentials (offline; safe while the server runs).
    #[command(subcommand)]
    Device(DeviceCmd),
    /// Manage staff users.
    #[command(subcommand)]
    User(UserCmd),
    /// Manage bearer API tokens for lanes and scripts.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Apply catalog, price and promotion events from FILE (JSON lines of HQ events, or CSV of
    /// items or prices) in one transaction: all or nothing.
    Import { file: PathBuf },
    /// Write a consistent copy of the database to FILE (safe while the server runs).
    Backup { file: PathBuf },
    /// Write a support bundle (one JSON file, secrets redacted) for first-level support: version,
    /// config, sync, devices, alerts, database health, disk, recent logs, systemd state. Safe
    /// while the server runs; docs/operations.md#support-bundle.
    Diag {
        /// Where to write it (mode 0600); without it, standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run virtual devices (lanes, scales, labels, fridges, printers) against a box, each with
    /// its own credentials, steered through a control API on loopback (docs/simulator.md).
    Simulate(Box<storebox::sim::cli::SimulateArgs>),
    /// A whole store on loopback: the box, a sample catalog, a sign-in and a dozen virtual
    /// devices; runs until Ctrl-C.
    Demo(storebox::sim::cli::DemoArgs),
    /// Run the reference HQ (no subcommand), or manage its stores.
    Hq {
        #[command(subcommand)]
        cmd: Option<HqCmd>,
    },
    /// Sign and verify release packages, offline (docs/releases.md).
    Release {
        #[command(subcommand)]
        cmd: storebox::release::cli::ReleaseCmd,
    },
    /// The root update helper (run by storebox-updater.service; docs/releases.md).
    #[command(subcommand)]
    Updater(UpdaterCmd),
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum UpdaterCmd {
    /// As root: repair an interrupted install, else carry out <data_dir>/updates/request.json.
    Apply,
}

#[derive(Subcommand)]
enum HqCmd {
    /// Manage the stores registered at this HQ (offline; safe while HQ runs).
    #[command(subcommand)]
    Store(HqStoreCmd),
    /// Manage the staff who sign in to HQ's console (offline; safe while HQ runs).
    #[command(subcommand)]
    User(HqUserCmd),
}

#[derive(Subcommand)]
enum HqUserCmd {
    /// Add a console user; the password is generated and printed once unless --password-stdin.
    Add {
        name: String,
        /// admin (users, tokens, releases), operator (author data, rollouts, store groups) or
        /// support (tickets, read-only fleet)
        #[arg(long)]
        role: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List console users.
    List,
    /// Set a user's password (ends their sessions); generated unless --password-stdin.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
enum HqStoreCmd {
    /// Register a store; prints its token once.
    Add {
        id: String,
        #[arg(long, default_value = "")]
        group: String,
    },
    /// Move a store to another group (empty string: no group).
    Group { id: String, group: String },
    /// List stores with their sync state.
    List,
}

#[derive(Subcommand)]
enum DeviceCmd {
    /// Provision a device; prints its MQTT credentials once.
    Add {
        id: String,
        /// lane, scale, label, fridge, printer, kiosk or generic
        #[arg(long, default_value = "generic")]
        kind: String,
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List provisioned devices.
    List,
    /// Remove a device; its credentials stop working.
    Remove { id: String },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a staff user. Reads the password from standard input with --password-stdin,
    /// otherwise generates one and prints it.
    Add {
        name: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Set a user's password (from standard input with --password-stdin, else generated) and end
    /// their sessions.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a token; it is printed once.
    Add {
        name: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
    /// Delete a token.
    Remove { name: String },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

fn main() -> ExitCode {
    // Files and directories storebox creates (data dir, database, backups, logs, keys) are the
    // service user's alone, also when run by hand outside systemd (whose unit sets UMask=0077):
    // the database holds password hashes and the log the first-run setup code.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storebox: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The Debian package's config files (docs/install.md): used when neither `--config` nor
/// `STOREBOX_CONFIG` names one and they exist, so admin commands on an installed box need no
/// `--config`. Elsewhere (no such file) the embedded defaults apply, as before.
const PACKAGE_CONFIG: &str = "/etc/storebox/storebox.toml";
const PACKAGE_HQ_CONFIG: &str = "/etc/storebox/hq.toml";

/// This process's command line, quoted for a shell where needed (for "run it as …" hints).
fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn read_or_generate_password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        Ok((line.trim_end_matches(['\r', '\n']).to_string(), false))
    } else {
        Ok((auth::generate_secret(""), true))
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Version = cli.command {
        println!("storebox {}", storebox::VERSION);
        return Ok(());
    }
    // The simulator and the demo do not use the box's config file.
    let command = match cli.command {
        Command::Simulate(args) => return storebox::sim::cli::simulate(*args),
        Command::Demo(args) => return storebox::sim::cli::demo(args),
        Command::Release { cmd } => {
            use storebox::clock::Clock as _;
            return storebox::release::cli::run(cmd, storebox::clock::SystemClock.now());
        }
        other => other,
    };
    // On a box installed from the .deb, the package's config file is the default.
    let default = match command {
        Command::Hq { .. } => PACKAGE_HQ_CONFIG,
        _ => PACKAGE_CONFIG,
    };
    let config_path = cli
        .config
        .clone()
        .or_else(|| Path::new(default).is_file().then(|| PathBuf::from(default)));
    let cli = Cli { command, ..cli };
    let config = Config::load(config_path.as_deref()).map_err(|e| {
        let denied = e.to_string().contains("ermission denied");
        let hint = if denied {
            format!(
                " (run it as the service user: sudo -u storebox {})",
                command_line()
            )
        } else {
            String::new()
        };
        anyhow::anyhow!("{e}{hint}")
    })?;
    let open_db = || {
        storebox::db::check_data_dir_owner(&config.storage.data_dir, &command_line())
            .map_err(anyhow::Error::msg)?;
        Db::open(&config.db_path()).with_context(|| "opening the store database")
    };
    match cli.command {
        Command::Version | Command::Simulate(_) | Command::Demo(_) | Command::Release { .. } => {
            unreachable!()
        }
        Command::CheckConfig => {
            println!(
                "config ok: store {} ({}), http {}, mqtt {}, data {}",
                config.store.id,
                config.store.timezone,
                config.http.listen,
                config.mqtt.listen,
                config.storage.data_dir.display()
            );
            match storebox::updates::service::off_reason(&config) {
                None => println!(
                    "updates on: install window {}, not in trading hours {}, probation {} s",
                    config.updates.window,
                    config.updates.trading_hours,
                    config.updates.probation_seconds
                ),
                Some(why) => println!("{why}"),
            }
            Ok(())
        }
        Command::Serve => serve(config),
        Command::Updater(UpdaterCmd::Apply) => {
            logging::init_stderr("info");
            let paths = storebox::updates::helper::Paths::from_config(&config);
            storebox::updates::helper::apply(&config, &paths, &storebox::clock::SystemClock)
                .map_err(anyhow::Error::from)
        }
        Command::Hq { cmd: None } => serve_hq(config),
        Command::Hq { cmd: Some(cmd) } => {
            logging::init_stderr("warn");
            // On the SQLite engine the command writes HQ's data dir: as its owner only.
            if config.hq_server.database_url.is_empty() {
                storebox::db::check_data_dir_owner(&config.hq_server.data_dir, &command_line())
                    .map_err(anyhow::Error::msg)?;
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            match cmd {
                HqCmd::User(cmd) => rt.block_on(hq_user_command(&config, cmd)),
                HqCmd::Store(cmd) => rt.block_on(hq_store_command(&config, cmd)),
            }
        }
        Command::Device(cmd) => {
            logging::init_stderr("warn");
            let db = open_db()?;
            match cmd {
                DeviceCmd::Add { id, kind, name } => {
                    let p = db.write_blocking(|c| {
                        let tx = storebox::db::immediate(c)?;
                        let p = registry::add(&tx, &id, &kind, &name, now_ms());
                        if let Ok(p) = &p {
                            audit::record(
                                &tx,
                                now_ms(),
                                "cli",
                                "device.provision",
                                &p.id,
                                &format!("kind={}", p.kind),
                            )?;
                        }
                        tx.commit()?;
                        Ok(p)
                    })??;
                    println!(
                        "device {} ({}) provisioned. MQTT credentials, shown only now:",
                        p.id, p.kind
                    );
                    println!(
                        "  client id: {}\n  username:  {}\n  password:  {}",
                        p.id, p.username, p.password
                    );
                    println!("  broker:    {}", config.mqtt.listen);
                }
                DeviceCmd::List => {
                    let list = db.read_blocking(registry::list)?;
                    println!(
                        "{:<24} {:<8} {:<7} {:<10} last seen",
                        "id", "kind", "online", "firmware"
                    );
                    for d in list {
                        println!(
                            "{:<24} {:<8} {:<7} {:<10} {}",
                            d.id,
                            d.kind,
                            if d.online { "yes" } else { "no" },
                            d.firmware.unwrap_or_default(),
                            d.last_seen.unwrap_or_else(|| "never".into())
                        );
                    }
                }
                DeviceCmd::Remove { id } => {
                    db.write_blocking(|c| {
                        let tx = storebox::db::immediate(c)?;
                        let r = registry::remove(&tx, &id);
                        if r.is_ok() {
                            audit::record(&tx, now_ms(), "cli", "device.remove", &id, "")?;
                        }
                        tx.commit()?;
                        Ok(r)
                    })??;
                    println!("device {id} removed");
                }
            }
            Ok(())
        }
        Command::User(cmd) => {
            logging::init_stderr("warn");
            let db = open_db()?;
            match cmd {
                UserCmd::Add {
                    name,
                    role,
                    password_stdin,
                } => {
                    let (password, generated) = read_or_generate_password(password_stdin)?;
                    auth::validate_username(&name)?;
                    auth::validate_password(&password)?;
                    // Hashed before the write: the database stays unlocked for the server.
                    let hash = auth::hash_password(&password);
                    db.write_blocking(|c| {
                        let r = auth::add_user_hashed(c, &name, &hash, role, now_ms());
                        if r.is_ok() {
                            audit::record(c, now_ms(), "cli", "user.add", &name, role.as_str())?;
                        }
                        Ok(r)
                    })??;
                    println!("user {name} added with role {role}");
                    if generated {
                        println!("password (shown only now): {password}");
                    }
                }
                UserCmd::List => {
                    for u in db.read_blocking(auth::list_users)? {
                        println!(
                            "{:<24} {:<8} {}",
                            u.username,
                            u.role,
                            if u.disabled { "disabled" } else { "" }
                        );
                    }
                }
                UserCmd::Passwd {
                    name,
                    password_stdin,
                } => {
                    let (password, generated) = read_or_generate_password(password_stdin)?;
                    auth::validate_password(&password)?;
                    let hash = auth::hash_password(&password);
                    db.write_blocking(|c| {
                        let r = auth::set_password_hash(c, &name, &hash);
                        if r.is_ok() {
                            audit::record(c, now_ms(), "cli", "user.passwd", &name, "")?;
                        }
                        Ok(r)
                    })??;
                    println!("password of {name} changed; their sessions were ended");
                    if generated {
                        println!("new password (shown only now): {password}");
                    }
                }
            }
            Ok(())
        }
        Command::Token(cmd) => {
            logging::init_stderr("warn");
            let db = open_db()?;
            match cmd {
                TokenCmd::Add { name, role } => {
                    let token = db.write_blocking(|c| {
                        let r = auth::add_token(c, &name, role, now_ms());
                        if r.is_ok() {
                            audit::record(c, now_ms(), "cli", "token.add", &name, role.as_str())?;
                        }
                        Ok(r)
                    })??;
                    println!("token {name} ({role}) created; it is shown only now:\n{token}");
                }
                TokenCmd::Remove { name } => {
                    db.write_blocking(|c| {
                        let r = auth::remove_token(c, &name);
                        if r.is_ok() {
                            audit::record(c, now_ms(), "cli", "token.remove", &name, "")?;
                        }
                        Ok(r)
                    })??;
                    println!("token {name} removed");
                }
            }
            Ok(())
        }
        Command::Import { file } => {
            logging::init_stderr("warn");
            let db = open_db()?;
            let tz = config.timezone();
            let report = db.write_blocking(|c| {
                Ok(storebox::catalog::import::import_file(
                    c,
                    &file,
                    tz,
                    now_ms(),
                ))
            })??;
            db.write_blocking(|c| {
                audit::record(
                    c,
                    now_ms(),
                    "cli",
                    "catalog.import",
                    &file.display().to_string(),
                    &format!("{} events", report.events),
                )
            })?;
            println!("imported {} events from {}", report.events, file.display());
            Ok(())
        }
        Command::Diag { out } => {
            let text = storebox::ops::diag::make_text(&config, "storebox diag");
            match out {
                Some(path) => {
                    storebox::ops::diag::write_private(&path, text.as_bytes())
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!(
                        "support bundle written to {} ({} bytes); it has no secrets (docs/operations.md)",
                        path.display(),
                        text.len()
                    );
                }
                None => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(text.as_bytes())
                        .and_then(|()| out.write_all(b"\n"))
                        .and_then(|()| out.flush())
                        .or_else(|e| match e.kind() {
                            std::io::ErrorKind::BrokenPipe => Ok(()),
                            _ => Err(e),
                        })?;
                }
            }
            Ok(())
        }
        Command::Backup { file } => {
            logging::init_stderr("warn");
            let db = open_db()?;
            db.backup_to(&file)
                .with_context(|| format!("backup to {}", file.display()))?;
            println!("backup written to {}", file.display());
            Ok(())
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let _log = logging::init_service(
        &config.log.level,
        &config.log_dir(),
        "storebox",
        config.log.keep_days,
        config.log.max_lines_per_sec,
        config.log.max_day_mb,
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("storebox")
        .build()?;
    rt.block_on(async {
        storebox::app::serve(
            config,
            storebox::clock::for_serve(),
            shutdown_signal(),
            |r| {
                let mut out = std::io::stdout().lock();
                let tls = r
                    .mqtt_tls
                    .map(|a| format!(" mqtts=mqtts://{a}"))
                    .unwrap_or_default();
                let scheme = if r.https { "https" } else { "http" };
                let _ = writeln!(
                    out,
                    "storebox ready http={scheme}://{} mqtt=mqtt://{}{tls}",
                    r.http, r.mqtt
                );
                let _ = out.flush();
            },
        )
        .await
    })?;
    // Router and connection threads of the broker have no stop API; leave without waiting on them.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    Ok(())
}

/// `storebox hq user …` against whichever storage HQ is configured with.
async fn hq_user_command(config: &Config, cmd: HqUserCmd) -> anyhow::Result<()> {
    use storebox::hq::storage::HqRole;
    let storage = storebox::hq::open_storage(&config.hq_server).await?;
    match cmd {
        HqUserCmd::Add {
            name,
            role,
            password_stdin,
        } => {
            let role: HqRole = role.parse().map_err(anyhow::Error::msg)?;
            let (password, generated) = read_or_generate_password(password_stdin)?;
            let user = storebox::hq::console::new_user(&name, role, &password, now_ms())?;
            storage.add_user(user).await?;
            println!("HQ user {name} added with role {}", role.as_str());
            if generated {
                println!("password, shown only now:\n{password}");
            }
        }
        HqUserCmd::List => {
            println!("{:<24} {:<9} created", "name", "role");
            for u in storage.users().await? {
                println!(
                    "{:<24} {:<9} {}",
                    u.name,
                    u.role.as_str(),
                    storebox::db::ts_from_ms(u.created_ms)
                );
            }
        }
        HqUserCmd::Passwd {
            name,
            password_stdin,
        } => {
            let (password, generated) = read_or_generate_password(password_stdin)?;
            // Checked like a new user's (name and length); the role is not used.
            let user = storebox::hq::console::new_user(&name, HqRole::Support, &password, 0)?;
            storage.set_password(&name, &user.password_hash).await?;
            println!("password of HQ user {name} changed; their sessions ended");
            if generated {
                println!("password, shown only now:\n{password}");
            }
        }
    }
    Ok(())
}

/// `storebox hq store …` against whichever storage HQ is configured with.
async fn hq_store_command(config: &Config, cmd: HqStoreCmd) -> anyhow::Result<()> {
    let storage = storebox::hq::open_storage(&config.hq_server).await?;
    match cmd {
        HqStoreCmd::Add { id, group } => {
            let token = storage.add_store(&id, &group, now_ms()).await?;
            println!(
                "store {id} registered{}; its HQ token, shown only now:\n{token}",
                if group.is_empty() {
                    String::new()
                } else {
                    format!(" in group {group}")
                }
            );
        }
        HqStoreCmd::Group { id, group } => {
            storage.set_group(&id, &group).await?;
            println!("store {id} is now in group {group:?}");
        }
        HqStoreCmd::List => {
            println!(
                "{:<20} {:<10} {:<26} {:>10} {:>8} {:>8} {:>10}",
                "id", "group", "last seen", "cursor", "lag", "outbox", "held"
            );
            for s in storage.list_stores().await? {
                println!(
                    "{:<20} {:<10} {:<26} {:>10} {:>8} {:>8} {:>10}",
                    s.id,
                    s.group,
                    s.last_seen.unwrap_or_else(|| "never".into()),
                    s.cursor.map_or("-".into(), |v| v.to_string()),
                    s.lag_events.map_or("-".into(), |v| v.to_string()),
                    s.outbox_business.map_or("-".into(), |v| v.to_string()),
                    s.held
                );
            }
        }
    }
    Ok(())
}

fn serve_hq(config: Config) -> anyhow::Result<()> {
    let log_dir = config.hq_server.data_dir.join("logs");
    let _log = logging::init_service(
        &config.log.level,
        &log_dir,
        "storebox-hq",
        config.log.keep_days,
        config.log.max_lines_per_sec,
        config.log.max_day_mb,
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("storebox-hq")
        .build()?;
    rt.block_on(async {
        let storage = storebox::hq::open_storage(&config.hq_server).await?;
        // Under systemd (storebox-hq.service is Type=notify with a watchdog): READY once the
        // listener is bound, then a ping at half the watchdog interval while the runtime runs.
        if let Some(every) = storebox::ops::systemd::watchdog_interval() {
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every / 2).await;
                    storebox::ops::systemd::notify_watchdog();
                }
            });
        }
        let served = storebox::hq::serve(
            config.hq_server,
            storage,
            storebox::clock::system(),
            shutdown_signal(),
            |addr| {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "storebox-hq ready http=http://{addr}");
                let _ = out.flush();
                storebox::ops::systemd::notify_ready();
            },
        )
        .await;
        storebox::ops::systemd::notify_stopping();
        served
    })?;
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

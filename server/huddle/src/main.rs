//! The `huddle` command: run the server, manage users, list plugins, make a local certificate.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use huddle::config::Config;
use huddle::store::{RedbStore, Store};
use huddle::users::{load_users, put_user, remove_user, valid_user_name, UserRecord};

mod messages_cli;

/// mimalloc rather than glibc malloc: the SIP thread allocates and frees a few hundred small
/// blocks per transaction; glibc spent about a sixth of the server's CPU on it (arena growth
/// and trimming with mprotect and page faults, chunk consolidation) in the UDP benchmarks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "huddle",
    version,
    about = "SIP registrar/proxy and WebRTC conferencing server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Run {
        #[arg(long, default_value = "config/huddle.toml")]
        config: PathBuf,
    },
    /// Manage users (the server must be stopped: the store is opened exclusively).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Inspect the plugins a configuration loads.
    Plugins {
        #[command(subcommand)]
        action: PluginsAction,
    },
    /// Read the messaging plugin's history (the server must be stopped).
    Messages {
        #[command(subcommand)]
        action: MessagesAction,
    },
    /// Write a self-signed certificate and key for local TLS/WSS.
    Cert {
        #[arg(long, default_value = "huddle-cert.pem")]
        cert: PathBuf,
        #[arg(long, default_value = "huddle-key.pem")]
        key: PathBuf,
        /// Host names and addresses the certificate is for.
        #[arg(long = "host", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        hosts: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum UserAction {
    /// Add a user or change their password (stores HA1s, never the password).
    Add {
        name: String,
        #[arg(long)]
        password: String,
        #[arg(long, default_value = "config/huddle.toml")]
        config: PathBuf,
    },
    /// Remove a user.
    Remove {
        name: String,
        #[arg(long, default_value = "config/huddle.toml")]
        config: PathBuf,
    },
    /// List users.
    List {
        #[arg(long, default_value = "config/huddle.toml")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum MessagesAction {
    /// List USER's messages in time order, oldest first.
    List {
        user: String,
        /// Only the conversation with this user (`bob` or `sip:bob@example.com`).
        #[arg(long = "with")]
        peer: Option<String>,
        /// From this time on: unix seconds or RFC 3339 UTC (`2026-11-26T10:00:00Z`).
        #[arg(long)]
        since: Option<String>,
        /// The messaging plugin's instance name (its store namespace).
        #[arg(long, default_value = "messaging")]
        plugin: String,
        #[arg(long, default_value = "config/huddle.toml")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum PluginsAction {
    /// Load each `[[plugins]]` entry (without starting a server) and show its name, version,
    /// ABI, capabilities and claims, or why it cannot be loaded. The claims come from a dry
    /// `init` with the entry's config against a host that discards every call (nothing is
    /// stored or sent), or from the entry's `claims` list. Exits non-zero if any entry fails
    /// or two entries' claims overlap.
    List {
        #[arg(long, default_value = "config/huddle.toml")]
        config: PathBuf,
    },
}

/// Prints `huddle plugins list`; false when something is wrong.
fn list_plugins(config: &Config) -> bool {
    let listings = huddle::plugins::list(config);
    if listings.is_empty() {
        println!("no [[plugins]] in the configuration");
        return true;
    }
    let mut ok = true;
    for listing in &listings {
        match &listing.outcome {
            Ok(p) => {
                println!("{}", p.name);
                println!("  library:      {}", listing.path.display());
                if p.name != p.info.name {
                    println!("  plugin:       {}", p.info.name);
                }
                println!("  version:      {}", p.info.version);
                println!("  abi:          {}.{}", p.info.abi_major, p.info.abi_minor);
                println!("  capabilities: {}", p.info.capabilities);
                let origin = if p.claims_from_config {
                    "from config"
                } else {
                    "from init"
                };
                if p.claims.is_empty() {
                    println!("  claims:       none ({origin})");
                }
                for (i, claim) in p.claims.iter().enumerate() {
                    let label = if i == 0 { "claims:" } else { "" };
                    println!("  {label:<13} {claim} ({origin})");
                }
            }
            Err(e) => {
                ok = false;
                println!("{}", listing.path.display());
                // Some causes (TOML errors) end in a newline.
                println!("  error: {}", e.to_string().trim_end());
                let mut source = std::error::Error::source(e);
                while let Some(s) = source {
                    // Loader errors already include their cause in the message.
                    if !e.to_string().contains(&s.to_string()) {
                        println!("  caused by: {}", s.to_string().trim_end());
                    }
                    source = s.source();
                }
            }
        }
        for (level, message) in &listing.logs {
            let mut lines = message.trim_end().lines();
            println!("  log {level:?}: {}", lines.next().unwrap_or(""));
            for line in lines {
                println!("    {line}");
            }
        }
    }
    if let Some(conflict) = huddle::plugins::conflict(&listings) {
        ok = false;
        println!("error: {}", conflict.to_string().trim_end());
    }
    ok
}

fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(parent) = config.store.path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let store = RedbStore::open(&config.store.path).with_context(|| {
        format!(
            "opening the store {} (is a server already using it?)",
            config.store.path.display()
        )
    })?;
    Ok(Arc::new(store))
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if config.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            let config = Config::load(&config)?;
            init_logging(&config);
            let store = open_store(&config)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            runtime.block_on(async move {
                let users: Vec<String> = config
                    .users
                    .iter()
                    .map(|u| format!("{}:{}", u.name, u.password))
                    .collect();
                let domain = config.sip.domain.clone();
                let running = huddle::server::start(config, store).await?;
                for (transport, addr) in &running.addrs {
                    tracing::info!(%transport, %addr, "listening");
                }
                if let Some(url) = running.ws_url() {
                    println!("Huddle is running. WebSocket URL: {url}  domain: {domain}");
                }
                if !users.is_empty() {
                    println!("Demo users (name:password): {}", users.join(" "));
                }
                if let Some(addr) = running.web_addr() {
                    println!("Demo page: open http://{addr}/ in two browser tabs");
                }
                tokio::signal::ctrl_c()
                    .await
                    .context("waiting for Ctrl-C")?;
                tracing::info!("shutting down");
                running.shutdown().await;
                anyhow::Ok(())
            })
        }
        Command::User { action } => match action {
            UserAction::Add {
                name,
                password,
                config,
            } => {
                anyhow::ensure!(
                    valid_user_name(&name),
                    "invalid user name {name:?}: use letters, digits and - _ . + ~"
                );
                let config = Config::load(&config)?;
                let store = open_store(&config)?;
                put_user(
                    store.as_ref(),
                    &UserRecord::new(&name, config.realm(), &password),
                )?;
                println!("user {name} saved");
                Ok(())
            }
            UserAction::Remove { name, config } => {
                let config = Config::load(&config)?;
                let store = open_store(&config)?;
                anyhow::ensure!(remove_user(store.as_ref(), &name)?, "no user {name}");
                println!("user {name} removed");
                Ok(())
            }
            UserAction::List { config } => {
                let config = Config::load(&config)?;
                let store = open_store(&config)?;
                let mut names: Vec<String> = load_users(store.as_ref())?.into_keys().collect();
                names.sort();
                for name in names {
                    println!("{name}");
                }
                Ok(())
            }
        },
        Command::Plugins {
            action: PluginsAction::List { config },
        } => {
            let config = Config::load(&config)?;
            anyhow::ensure!(list_plugins(&config), "some plugins cannot be used");
            Ok(())
        }
        Command::Messages {
            action:
                MessagesAction::List {
                    user,
                    peer,
                    since,
                    plugin,
                    config,
                },
        } => {
            let since = since
                .as_deref()
                .map(messages_cli::parse_since)
                .transpose()?;
            let config = Config::load(&config)?;
            let store = open_store(&config)?;
            let lines = messages_cli::list(
                store.as_ref(),
                &plugin,
                &user,
                peer.as_deref(),
                since.unwrap_or(0),
            )?;
            for line in lines {
                println!("{line}");
            }
            Ok(())
        }
        Command::Cert { cert, key, hosts } => {
            huddle::transport::generate_self_signed(&hosts, &cert, &key)?;
            println!("wrote {} and {}", cert.display(), key.display());
            Ok(())
        }
    }
}

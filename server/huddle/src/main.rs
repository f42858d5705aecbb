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
/// Plugin libraries that take the host's allocator (ABI 1.11) allocate here too.
#[global_allocator]
static GLOBAL: mi::Mimalloc = mi::Mimalloc;

/// mimalloc called the way a C program calls it.
///
/// The `mimalloc` crate's allocator passes every Rust allocation to `mi_malloc_aligned`. Its
/// fast path takes a block only when the size's page has one on its free list; otherwise
/// (and for every size over 1 KiB) it over-allocates by `alignment - 1` unless the size class
/// is a power of two, which takes the block from the next size class (a 48-byte request from
/// the 64-byte page) and never collects the blocks freed back to the size's own page: once a
/// 48-, 80- or 96-byte page's free list had run dry, every later request of that size took
/// the slow path (bench/NOTES.md, branch msgcost). `mi_malloc`, like any C `malloc`, returns
/// blocks aligned for every object that fits (16 bytes from a size of 16, mimalloc's size
/// classes being whole double words past one word), so an alignment up to 16 and no larger
/// than the size needs no aligned call; the address is still checked (a block that is not
/// aligned after all goes back, and the aligned call is made), so a mimalloc built otherwise
/// stays correct, only slower.
#[allow(unsafe_code)]
mod mi {
    use std::alloc::{GlobalAlloc, Layout};
    use std::ffi::c_void;

    use libmimalloc_sys::{
        mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc,
        mi_zalloc_aligned,
    };

    /// The alignment of `max_align_t`: what C's `malloc` promises for a block at least that
    /// large (mimalloc's `MI_MAX_ALIGN_SIZE`).
    const PLAIN_ALIGN: usize = 16;

    /// The global allocator (module docs).
    #[derive(Debug)]
    pub struct Mimalloc;

    /// Whether `malloc`'s own alignment serves `align` for a block of `size` bytes.
    #[inline(always)]
    fn plain(size: usize, align: usize) -> bool {
        align <= PLAIN_ALIGN && align <= size
    }

    #[inline(always)]
    fn aligned(p: *mut u8, align: usize) -> bool {
        p.addr() & (align - 1) == 0
    }

    // SAFETY: every block comes from mimalloc with at least the alignment asked (the plain
    // calls' results are checked, and replaced by the aligned calls' when short of it) and is
    // released or resized by mimalloc, whose `mi_free` and `mi_realloc` take a block of any of
    // its allocation calls; null is returned only when mimalloc returned null.
    unsafe impl GlobalAlloc for Mimalloc {
        #[inline]
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let (size, align) = (layout.size(), layout.align());
            if plain(size, align) {
                // SAFETY: mimalloc takes any size.
                let p = unsafe { mi_malloc(size) }.cast::<u8>();
                if aligned(p, align) {
                    return p;
                }
                // SAFETY: a block mi_malloc just made, not handed out.
                unsafe { mi_free(p.cast::<c_void>()) };
            }
            // SAFETY: `align` is a power of two (a `Layout`'s).
            unsafe { mi_malloc_aligned(size, align) }.cast::<u8>()
        }

        #[inline]
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let (size, align) = (layout.size(), layout.align());
            if plain(size, align) {
                // SAFETY: as in `alloc`.
                let p = unsafe { mi_zalloc(size) }.cast::<u8>();
                if aligned(p, align) {
                    return p;
                }
                // SAFETY: as in `alloc`.
                unsafe { mi_free(p.cast::<c_void>()) };
            }
            // SAFETY: as in `alloc`.
            unsafe { mi_zalloc_aligned(size, align) }.cast::<u8>()
        }

        #[inline]
        unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
            // SAFETY: the caller's promise: a block of this allocator, so of mimalloc.
            unsafe { mi_free(ptr.cast::<c_void>()) }
        }

        #[inline]
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let align = layout.align();
            if plain(new_size, align) {
                // SAFETY: the caller's promise: a live block of mimalloc; on null the block is
                // left as it was, as `GlobalAlloc::realloc` requires.
                let p = unsafe { mi_realloc(ptr.cast::<c_void>(), new_size) }.cast::<u8>();
                if aligned(p, align) {
                    return p;
                }
                // `realloc` promises C's alignment too, so this is a mimalloc built otherwise;
                // the contents move to an aligned block (the old one is gone already, so a
                // failure here cannot be given back as null).
                let layout = Layout::from_size_align(new_size, align)
                    .unwrap_or_else(|_| std::process::abort());
                // SAFETY: as in `alloc`.
                let q = unsafe { mi_malloc_aligned(new_size, align) }.cast::<u8>();
                if q.is_null() {
                    std::alloc::handle_alloc_error(layout);
                }
                // SAFETY: `p` holds `new_size` bytes of contents and `q` room for as many; two
                // live blocks do not overlap. `p` is mimalloc's and released once.
                unsafe {
                    std::ptr::copy_nonoverlapping(p, q, new_size);
                    mi_free(p.cast::<c_void>());
                }
                return q;
            }
            // SAFETY: as above; `align` is a power of two.
            unsafe { mi_realloc_aligned(ptr.cast::<c_void>(), new_size, align) }.cast::<u8>()
        }
    }
}

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

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout};

    use super::mi::Mimalloc;

    /// Sizes around mimalloc's size classes (one word, double words, the 1 KiB small limit, the
    /// large classes) and alignments from 1 to past the plain calls' 16: every block aligned,
    /// zeroed when asked, its contents kept by growing and shrinking, freed.
    #[test]
    fn blocks_are_aligned_and_keep_their_contents_through_realloc() {
        let sizes = [
            1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 24, 31, 32, 40, 48, 56, 64, 72, 80, 96, 100, 127, 128,
            160, 200, 255, 256, 320, 500, 1000, 1024, 1025, 1500, 2048, 4000, 4096, 5000, 70_000,
        ];
        let a = Mimalloc;
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for &size in &sizes {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a layout of non-zero size; each block is used within its size and
                // freed once with its layout.
                unsafe {
                    let z = a.alloc_zeroed(layout);
                    assert!(!z.is_null());
                    assert_eq!(z.addr() % align, 0, "zeroed {size}/{align}");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    a.dealloc(z, layout);

                    let mut p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p.addr() % align, 0, "alloc {size}/{align}");
                    for i in 0..size {
                        *p.add(i) = (i % 251) as u8;
                    }
                    for new_size in [size * 3 + 5, (size / 2).max(1), size + 1] {
                        let old = Layout::from_size_align(size, align).unwrap();
                        let keep = size.min(new_size);
                        let q = a.realloc(p, old, new_size);
                        assert!(!q.is_null());
                        assert_eq!(q.addr() % align, 0, "realloc {size}->{new_size}/{align}");
                        for i in 0..keep {
                            assert_eq!(*q.add(i), (i % 251) as u8);
                        }
                        let back =
                            a.realloc(q, Layout::from_size_align(new_size, align).unwrap(), size);
                        assert!(!back.is_null());
                        assert_eq!(back.addr() % align, 0);
                        for i in 0..keep {
                            assert_eq!(*back.add(i), (i % 251) as u8);
                        }
                        for i in keep..size {
                            *back.add(i) = (i % 251) as u8;
                        }
                        p = back;
                    }
                    a.dealloc(p, layout);
                }
            }
        }
    }
}

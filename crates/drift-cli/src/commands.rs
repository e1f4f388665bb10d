//! What each subcommand does.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use drift_crypto::ClusterSecret;
use drift_server::client::{Client, ClientError};
use drift_server::{Node, NodeConfig};

use crate::local_files::BlockWriter;
use crate::output;
use crate::{Cli, Command};

/// Files at least this large get a progress bar (when stderr is a terminal).
const PROGRESS_MIN_BYTES: u64 = 8 << 20;

/// Arguments of `drift node`.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// Address to listen on, e.g. 127.0.0.1:3000 (or :3000 for loopback).
    #[arg(long, value_name = "ADDR", value_parser = crate::parse_addr)]
    listen: SocketAddr,
    /// Data directory (created if missing).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// A peer to join through; repeat for several. The rest are found by peer exchange.
    #[arg(long = "peer", value_name = "ADDR", value_parser = crate::parse_addr)]
    peers: Vec<SocketAddr>,
    /// Replication factor R (capped by the cluster's size).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=16))]
    replicas: u8,
    /// Seconds a peer may be down before its replicas are re-created elsewhere.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    lost_after: u64,
    /// Seconds between name-index comparisons with peers.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    anti_entropy: u64,
    /// Seconds an unreferenced chunk is kept before it is collected.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    gc_grace: u64,
    /// Cap on the bytes of chunk files this node keeps (default: the disk's size).
    #[arg(long, value_name = "BYTES")]
    max_bytes: Option<u64>,
    /// Seconds between scrubs, which re-verify every local chunk and re-fetch corrupt ones.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    scrub_interval: u64,
    /// MiB the node's transfers (uploads, replica writes, reads ahead) may hold at once; one that
    /// finds none free in time fails as busy. Lower it on a small machine.
    #[arg(long, value_name = "MIB", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(16..=65536))]
    transfer_memory: u32,
    /// Shut down when the process that started this node exits (for scripts,
    /// the demo and tests, so no node outlives its harness).
    #[arg(long)]
    exit_with_parent: bool,
}

/// Tunes glibc's malloc for a node, which allocates and frees chunk-sized
/// (1 MiB) buffers on many threads (runtime workers and the blocking pool):
/// - Two arenas. glibc gives threads up to 8 arenas per core and keeps freed
///   memory in each, so RSS grew with the number of threads that had touched a
///   chunk: a 1 GiB put and get at pipeline depth 8 peaked at 41 MiB with two
///   instead of 58 MiB, with the same throughput and CPU.
/// - A fixed mmap threshold (8 MiB) and a high trim threshold (128 MiB):
///   chunk buffers then come from the arenas and their pages stay mapped, not
///   handed back and faulted in again for the next chunk. `cargo xtask bench
///   --only three,remote`, two alternating runs each: CPU per MiB read through
///   a node without a copy 2.11 / 2.11 -> 1.88 / 1.84 ms (summed over 4 nodes),
///   767 / 771 -> 813 / 883 MB/s; per MiB stored with R = 3, 5.78 / 5.74 ->
///   5.74 / 5.35 ms; peak RSS per node 46 -> 50 MiB.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_malloc() {
    // SAFETY: mallopt only sets malloc tunables under malloc's own lock; it
    // is sound to call at any time, and here no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 8 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

/// How often a node looks whether its transfers went quiet.
const QUIET_CHECK: Duration = Duration::from_secs(2);

/// Gives the memory transfers freed back to the system once they are quiet.
///
/// The malloc tuning above keeps freed chunk buffers mapped, for the next
/// transfer to reuse, and a burst leaves them all there: 50 concurrent gets
/// of a 64 MB file took a node from 23 to 234 MB of RSS, still 234 MB 20 s
/// after they ended; `malloc_trim` then took it to 26 MB. So it runs once
/// after each busy spell: when a check finds no transfer memory held and
/// transfers began since the last trim. While transfers run, nothing is
/// trimmed, so their buffers stay reused.
async fn give_back_memory_when_quiet(node: Node) {
    let mut tick = tokio::time::interval(QUIET_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut trimmed_after = node.transfer_use().begun;
    loop {
        tick.tick().await;
        let now = node.transfer_use();
        if now.held == 0 && now.begun != trimmed_after {
            trimmed_after = now.begun;
            // It walks every arena: not on a runtime worker.
            let _ = tokio::task::spawn_blocking(trim_malloc).await;
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim_malloc() {
    // SAFETY: malloc_trim takes each arena's lock while it walks the arena;
    // it is sound to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_malloc() {}

/// Runs one command on a fresh multi-thread runtime.
pub fn run(cli: Cli) -> Result<()> {
    if let Command::Keygen = cli.command {
        let secret = ClusterSecret::generate()?;
        return output::emit(&format!("{}\n", secret.to_hex()));
    }
    let secret = load_secret(cli.secret_file.as_deref())?;
    if matches!(cli.command, Command::Node(_)) {
        tune_malloc();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // The command runs as a task on the runtime's workers, not in `block_on`
    // on this thread, which is outside the runtime: there, every wake-up of
    // the command by the transport's tasks is a cross-thread hand-off.
    // A 1 GiB get to /dev/null, 8 alternating runs: the client's CPU
    // 0.39 -> 0.33 s, wall 0.82 -> 0.79 s (medians); `cargo xtask bench
    // --only single,remote`, 3 alternating runs: the bench's client CPU per
    // MiB got 0.34-0.39 -> 0.24-0.27 ms, the 1 GiB get 1199 -> 1299 MB/s.
    let result = runtime.block_on(async move {
        match tokio::spawn(command(cli, secret)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(anyhow!("the command was cancelled: {e}")),
        }
    });
    // A read of standard input holds a blocking thread until input comes,
    // and dropping the runtime would wait for it: a put the node gave up on
    // would then never exit while its producer stays silent.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn command(cli: Cli, secret: ClusterSecret) -> Result<()> {
    let timeout = Duration::from_secs(cli.connect_timeout.max(1));
    match cli.command {
        Command::Keygen => Ok(()),
        Command::Node(args) => run_node(args, secret).await,
        Command::Put { file, name } => put(cli.node, &secret, timeout, &file, name).await,
        Command::Get { name, output } => get(cli.node, &secret, timeout, &name, output).await,
        Command::Rm { name } => {
            let client = Client::connect(cli.node, &secret, timeout).await?;
            client.delete(&name).await?;
            client.close().await;
            Ok(())
        }
        Command::Ls { json } => {
            let client = Client::connect(cli.node, &secret, timeout).await?;
            let files = client.list().await?;
            client.close().await;
            output::print_files(&files, json)
        }
        Command::Status { json } => {
            let client = Client::connect(cli.node, &secret, timeout).await?;
            let status = client.status().await?;
            client.close().await;
            output::print_status(&status, json)
        }
    }
}

/// Most bytes read from a secret file: a secret is 64 hex characters, and
/// a device such as /dev/zero given by mistake must not be read for ever.
const SECRET_FILE_MAX: u64 = 4096;

fn load_secret(file: Option<&Path>) -> Result<ClusterSecret> {
    let text = match file {
        Some(path) => {
            use std::io::Read;
            let mut text = String::new();
            std::fs::File::open(path)
                .and_then(|f| f.take(SECRET_FILE_MAX).read_to_string(&mut text))
                .with_context(|| format!("cannot read secret file {}", path.display()))?;
            text
        }
        None => std::env::var("DRIFT_SECRET").map_err(|_| {
            anyhow!("cluster secret missing: pass --secret-file or set DRIFT_SECRET (make one with `drift keygen`)")
        })?,
    };
    Ok(ClusterSecret::from_hex(&text)?)
}

async fn run_node(args: NodeArgs, secret: ClusterSecret) -> Result<()> {
    // Read first: the parent may exit while the node is still starting.
    let parent = args
        .exit_with_parent
        .then(std::os::unix::process::parent_id);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let mut config = NodeConfig::new(args.listen, &args.data, secret);
    config.bootstrap = args.peers;
    config.replicas = usize::from(args.replicas);
    config.lost_after = Duration::from_secs(args.lost_after);
    config.anti_entropy_interval = Duration::from_secs(args.anti_entropy.max(1));
    config.gc_grace = Duration::from_secs(args.gc_grace);
    config.max_bytes = args.max_bytes;
    config.scrub_interval = Duration::from_secs(args.scrub_interval.max(1));
    config.transfer_memory = (args.transfer_memory as usize) << 20;
    let node = Node::start(config).await?;
    // Scripts wait for this line; a node whose stdout is gone runs on.
    let _ = output::emit(&format!(
        "drift node {} listening on {}\n",
        node.id(),
        node.listen_addr()
    ));
    tokio::select! {
        signal = wait_for_signal() => signal?,
        _ = parent_gone(parent) => tracing::info!("the parent process exited"),
        () = give_back_memory_when_quiet(node.clone()) => {}
    }
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}

/// Resolves once this process has been re-parented away from `parent`
/// (checked every 200 ms); never, if `parent` is `None`.
async fn parent_gone(parent: Option<u32>) {
    let Some(parent) = parent else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    while std::os::unix::process::parent_id() == parent {
        tick.tick().await;
    }
}

async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

async fn put(
    node: SocketAddr,
    secret: &ClusterSecret,
    timeout: Duration,
    file: &Path,
    name: Option<String>,
) -> Result<()> {
    let from_stdin = file == Path::new("-");
    let name = match name {
        Some(n) => n,
        None if from_stdin => bail!("reading standard input needs --name NAME"),
        None => file
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .ok_or_else(|| anyhow!("cannot derive a name from {}: pass --name", file.display()))?,
    };
    let (source, size) = if from_stdin {
        (Source::Reader(Box::new(tokio::io::stdin())), 0)
    } else {
        let path = file.to_path_buf();
        let opened = tokio::task::spawn_blocking(move || {
            let f = drift_store::UncachedReader::open(&path)?;
            let meta = f.file().metadata()?;
            Ok::<_, std::io::Error>((f, meta))
        })
        .await
        .map_err(|e| anyhow!("cannot read {}: {e}", file.display()))?;
        let (f, meta) = opened.with_context(|| format!("cannot read {}", file.display()))?;
        if meta.is_dir() {
            bail!("cannot read {}: it is a directory", file.display());
        }
        if meta.is_file() {
            let size = meta.len();
            (
                Source::File(crate::local_files::UncachedSource::new(f, size)),
                size,
            )
        } else {
            // A FIFO or a device: read it as a stream.
            let reader = tokio::fs::File::from_std(f.into_file());
            (Source::Reader(Box::new(reader)), meta.len())
        }
    };
    let bar = progress_bar(size);
    let client = Client::connect(node, secret, timeout).await?;
    let on_progress = |sent| {
        if let Some(b) = &bar {
            b.set_position(sent);
        }
    };
    let result = match source {
        Source::File(blocks) => client.put_blocks(&name, blocks, on_progress).await,
        Source::Reader(reader) => client.put(&name, reader, on_progress).await,
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    client.close().await;
    let (_, size) = result?;
    eprintln!("stored {name} ({})", output::human_bytes(size));
    Ok(())
}

/// What `drift put` reads: a regular file in direct blocks, or anything
/// else (stdin, a FIFO, a device) as a plain reader.
enum Source {
    File(crate::local_files::UncachedSource),
    Reader(Box<dyn tokio::io::AsyncRead + Unpin + Send>),
}

async fn get(
    node: SocketAddr,
    secret: &ClusterSecret,
    timeout: Duration,
    name: &str,
    output: Option<PathBuf>,
) -> Result<()> {
    let client = Client::connect(node, secret, timeout).await?;
    let mut bar = None;
    let mut on_progress = |got: u64, size: u64| {
        if bar.is_none() {
            bar = Some(progress_bar(size));
        }
        if let Some(Some(b)) = &bar {
            b.set_position(got);
        }
    };
    let result = match output {
        None => match stdout_file() {
            Ok(stdout) => match client
                .get(name, BlockWriter::plain(stdout), &mut on_progress)
                .await
            {
                // The reader went away (`drift get NAME | head -c 100`): it
                // has what it wanted, as with `ls` and `status`.
                Err(ClientError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
                other => other.map_err(anyhow::Error::from),
            },
            Err(e) => Err(anyhow!("cannot write to stdout: {e}")),
        },
        Some(path) => get_to_file(&client, name, &path, &mut on_progress).await,
    };
    if let Some(Some(b)) = bar {
        b.finish_and_clear();
    }
    client.close().await;
    result.map(|_| ())
}

/// Stdout as a file of its own (a duplicate descriptor), so a get writes
/// blocks to it without std's line buffering or tokio's extra copy.
fn stdout_file() -> std::io::Result<std::fs::File> {
    use std::os::fd::AsFd;
    Ok(std::io::stdout().as_fd().try_clone_to_owned()?.into())
}

/// Writes into a temporary file beside `path` and renames it into place only
/// when every byte has arrived and been verified, so a failed get leaves no
/// partial file. A symlink is followed (the file it names is replaced, not the
/// link), and a device, FIFO or socket (`-o /dev/null`) is written in place:
/// renaming over it would replace it with a regular file.
async fn get_to_file(
    client: &Client,
    name: &str,
    path: &Path,
    progress: &mut impl FnMut(u64, u64),
) -> Result<u64> {
    use std::os::unix::fs::PermissionsExt as _;
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        // Opening a FIFO waits for its reader: on the blocking pool.
        let special = tokio::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .await
            .with_context(|| format!("cannot write {}", path.display()))?
            .into_std()
            .await;
        return Ok(client
            .get(name, BlockWriter::plain(special), progress)
            .await?);
    }
    let resolved = std::fs::canonicalize(path).ok();
    let path = resolved.as_deref().unwrap_or(path);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // A new file gets the usual mode (0666 less the umask), as `cp` would
    // give it, not the temporary file's 0600; a replaced file keeps its own.
    let replaced = std::fs::metadata(path)
        .ok()
        .filter(std::fs::Metadata::is_file)
        .map(|m| m.permissions());
    let tmp = tempfile::Builder::new()
        .prefix(".drift-get-")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(&dir)
        .map_err(without_temp_path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    if let Some(mode) = replaced {
        std::fs::set_permissions(tmp.path(), mode)
            .map_err(without_temp_path)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let std_file = tmp
        .reopen()
        .with_context(|| format!("cannot write {}", path.display()))?;
    let mut file = BlockWriter::uncached(std_file);
    // `get` flushes the last block once every byte has arrived.
    let size = client.get(name, &mut file, progress).await?;
    let file = file
        .into_file()
        .ok_or_else(|| anyhow!("cannot write {}: a write did not finish", path.display()))?;
    tokio::task::spawn_blocking(move || file.sync_all())
        .await
        .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| anyhow!("cannot write {}: {}", path.display(), e.error))?;
    Ok(size)
}

/// tempfile's errors end with ` at path "<the temporary file>"` (and keep
/// the system's error only as text); the user only knows the file they asked
/// for, which the caller's context names.
fn without_temp_path(e: std::io::Error) -> std::io::Error {
    let text = e.to_string();
    match text.rsplit_once(" at path ") {
        Some((head, _)) => std::io::Error::new(e.kind(), head.to_string()),
        None => e,
    }
}

fn progress_bar(size: u64) -> Option<indicatif::ProgressBar> {
    if size < PROGRESS_MIN_BYTES || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(size);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    Some(bar)
}

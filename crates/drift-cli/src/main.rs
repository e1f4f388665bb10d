//! `drift`: run a node, and store, fetch, delete and list files through one.
//!
//! Every command but `keygen` needs the cluster secret, from `--secret-file`
//! or `DRIFT_SECRET`. Exit status is 0 on success; otherwise one line on stderr.

mod commands;
mod local_files;
mod output;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// drift: a peer-to-peer, encrypted, replicated file store.
///
/// Start a cluster: run `drift keygen > secret`, then on each machine
/// `drift node --listen ADDR --data DIR --peer OTHER_ADDR --secret-file secret`.
/// Then `drift put FILE`, `drift get NAME`, `drift ls`, `drift rm NAME` and
/// `drift status` talk to a node (`--node`, default 127.0.0.1:3000).
///
/// Every command but keygen needs the cluster secret: `--secret-file FILE`, or
/// the `DRIFT_SECRET` environment variable holding the 64 hex characters.
#[derive(Debug, Parser)]
#[command(name = "drift", version, propagate_version = true)]
pub struct Cli {
    /// Read the cluster secret (64 hex characters) from this file.
    #[arg(long, global = true, value_name = "FILE")]
    secret_file: Option<PathBuf>,

    /// The node to talk to.
    #[arg(
        long,
        global = true,
        value_name = "ADDR",
        default_value = "127.0.0.1:3000",
        value_parser = parse_addr
    )]
    node: SocketAddr,

    /// How long to wait for a node to answer when connecting, in seconds.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 5)]
    connect_timeout: u64,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a new random cluster secret (64 hex characters).
    Keygen,
    /// Run a storage node in the foreground until Ctrl-C or SIGTERM.
    Node(commands::NodeArgs),
    /// Store FILE in the cluster (use `-` and --name to read standard input).
    Put {
        /// The file to store.
        file: PathBuf,
        /// The name to store it under (default: the file's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Fetch a file; writes to standard output unless -o is given.
    Get {
        /// The file's name in the cluster.
        name: String,
        /// Write to this file instead (created only once every byte is verified).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Delete a file from the cluster.
    Rm {
        /// The file's name.
        name: String,
    },
    /// List the files in the cluster.
    Ls {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show a node's peers, replication health and usage.
    Status {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// Parses an address: `IP:PORT`, `HOST:PORT` (resolved, IPv4 preferred), or
/// `:PORT` for 127.0.0.1, as the original demo wrote its nodes.
fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid port in {text:?}"))?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {text:?} (expected HOST:PORT): {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version: print as clap does, exit 0.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // Bare `drift`: clap would print the whole help as the "error".
            eprintln!(
                "drift: a command is required: keygen, node, put, get, rm, ls or status (see drift --help)"
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            // A usage error is one line too, like every other error.
            let text = e.render().to_string();
            let message: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!(
                "drift: {} (see drift --help)",
                message.join(" ").trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the chain of causes.
            let mut line = e.to_string();
            for cause in e.chain().skip(1) {
                let cause = cause.to_string();
                if !line.contains(&cause) {
                    line.push_str(": ");
                    line.push_str(&cause);
                }
            }
            eprintln!("drift: {}", line.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_addr;

    #[test]
    fn addresses_parse_in_every_form_users_write() {
        assert_eq!(
            parse_addr("127.0.0.1:3000").unwrap().to_string(),
            "127.0.0.1:3000"
        );
        assert_eq!(parse_addr(":7000").unwrap().to_string(), "127.0.0.1:7000");
        assert_eq!(parse_addr("localhost:5000").unwrap().port(), 5000);
        assert_eq!(parse_addr("[::1]:5000").unwrap().to_string(), "[::1]:5000");
        assert!(parse_addr("localhost").is_err());
        assert!(parse_addr(":99999").is_err());
    }
}

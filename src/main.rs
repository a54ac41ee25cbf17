use std::process::ExitCode;

use clap::Parser;
use omni_bridge::cli::{Cli, Command};
use omni_bridge::{config, connect_cli, import_cli, keys_cli, server};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args.under(&cli.serve),
        Some(Command::Keys { store, action }) => {
            return keys_cli::run(&store.under(&cli.serve), action);
        }
        Some(Command::Import(args)) => return import_cli::run(args),
        Some(Command::Connect(mut args)) => {
            args.store = args.store.under(&cli.serve);
            return connect_cli::run(args);
        }
        Some(Command::Openapi) => {
            print!("{}", omni_bridge::http::openapi_json());
            return ExitCode::SUCCESS;
        }
        None => cli.serve,
    };
    let settings = match config::resolve(&args) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("omni-bridge: {e}");
            return ExitCode::from(2);
        }
    };
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(&settings.log));
    // process-wrap's debug lines print a child's whole Command, environment included: the
    // secrets of stdio upstreams. Never below info, whatever the filter says.
    logger.filter_module("process_wrap", log::LevelFilter::Info);
    logger.init();
    let result = actix_web::rt::System::new().block_on(async move {
        let running = server::start(settings).await?;
        let store = running.store.clone();
        // On SIGINT or SIGTERM: close live sessions, stop accepting, let in-flight requests
        // finish within the shutdown timeout; then this await returns.
        running.stopper.clone().on_signals();
        let outcome = running.server.await;
        // Rows of the last calls (and of calls cut by the grace) reach the store, or are
        // counted and logged.
        running.audit.close().await;
        store.close();
        log::info!("omni-bridge stopped");
        outcome.map_err(|e| server::StartError::Bind {
            addr: running.addr,
            source: e,
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ server::StartError::NoKeys(_)) => {
            eprintln!("omni-bridge: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            log::error!("{e}");
            eprintln!("omni-bridge: {e}");
            ExitCode::FAILURE
        }
    }
}

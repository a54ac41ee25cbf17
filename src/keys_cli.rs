//! `omni-bridge keys ...`: API keys from the command line, against the same store the
//! server uses, so the secure setup works before the first start.

use std::process::ExitCode;

use crate::auth::manage::{self, KeyInput};
use crate::cli::{KeysAction, ServeArgs};
use crate::config;
use crate::store::{Store, StoreError, migrate};

pub fn run(args: &ServeArgs, action: KeysAction) -> ExitCode {
    let settings = match config::resolve(args) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("omni-bridge: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = actix_web::rt::System::new().block_on(async move {
        if let crate::store::DatabaseUrl::Sqlite(path) = &settings.database {
            crate::store::files::prepare_sqlite(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        migrate::run(&settings.database)
            .await
            .map_err(|e| e.to_string())?;
        let store = Store::open(&settings.database, &settings.store).map_err(|e| e.to_string())?;
        let result = act(&store, action).await;
        store.close();
        result
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("omni-bridge: {e}");
            ExitCode::from(2)
        }
    }
}

async fn act(store: &Store, action: KeysAction) -> Result<(), String> {
    match action {
        KeysAction::Create {
            name,
            role,
            allow,
            rate_limit,
        } => {
            let input = KeyInput {
                name: Some(name),
                role: Some(role),
                allow,
                rate_limit,
            };
            let (row, secret) = manage::create(store, &input)
                .await
                .map_err(|e| e.to_string())?;
            eprintln!(
                "created key '{}' ({}); its secret, shown only now:",
                row.name, row.role
            );
            println!("{secret}");
        }
        KeysAction::List => {
            for row in store
                .list_keys()
                .await
                .map_err(|e: StoreError| e.to_string())?
            {
                let shown =
                    serde_json::to_string(&manage::public(&row)).map_err(|e| e.to_string())?;
                println!("{shown}");
            }
        }
        KeysAction::Revoke { name } => {
            if !store.revoke_key(&name).await.map_err(|e| e.to_string())? {
                return Err(format!("no active API key named '{name}'"));
            }
            eprintln!("revoked key '{name}'");
            // Running instances on the same PostgreSQL end the key's sessions now, not at
            // their next refresh (on SQLite, one instance re-reads keys every 5 s).
            let origin = format!("keys-cli-{}", std::process::id());
            crate::cluster::Cluster::new(store.clone(), origin, "keys-cli".into())
                .announce(crate::cluster::Announcement::Keys)
                .await;
        }
    }
    Ok(())
}

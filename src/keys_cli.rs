//! `omni-bridge keys ...`: API keys from the command line, against the same store the
//! server uses, so the secure setup works before the first start.

use std::process::ExitCode;

use crate::auth::manage::{self, KeyInput};
use crate::cli::{KeysAction, ServeArgs};
use crate::config;
use crate::store::{Store, StoreError, migrate};

pub fn run(args: &ServeArgs, action: KeysAction) -> ExitCode {
    match with_store(args, async |store: &Store| act(store, action).await) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("omni-bridge: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs `work` against the store `args` name, migrated first, on a runtime of its own.
pub fn with_store<T>(
    args: &ServeArgs,
    work: impl AsyncFnOnce(&Store) -> Result<T, String>,
) -> Result<T, String> {
    let settings = config::resolve(args).map_err(|e| e.to_string())?;
    actix_web::rt::System::new().block_on(async move {
        if let crate::store::DatabaseUrl::Sqlite(path) = &settings.database {
            crate::store::files::prepare_sqlite(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        migrate::run(&settings.database)
            .await
            .map_err(|e| e.to_string())?;
        let store = Store::open(&settings.database, &settings.store).map_err(|e| e.to_string())?;
        let result = work(&store).await;
        store.close();
        result
    })
}

/// Creates a key and answers its secret (shown once; only its hash is stored).
pub async fn create(store: &Store, input: &KeyInput) -> Result<String, String> {
    let (row, secret) = manage::create(store, input)
        .await
        .map_err(|e| e.to_string())?;
    eprintln!(
        "created key '{}' ({}); its secret, shown only now:",
        row.name, row.role
    );
    Ok(secret)
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
            println!("{}", create(store, &input).await?);
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

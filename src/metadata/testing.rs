//! Test fixtures for the metadata store on both engines: a fresh SQLite file,
//! or a fresh database on the PostgreSQL server the tests are given
//! (`BERTH_TEST_POSTGRES`, or the file `tests/services/start.sh` writes).
//! Used by the unit tests here and by the end-to-end tests in `tests/`.

use std::path::PathBuf;

use super::MetadataStore;

/// Which SQL engine a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// The variables of the test services: the process environment, else the
/// file `tests/services/start.sh` wrote (`target/test-services.env`).
pub fn service_var(name: &str) -> Option<String> {
    if let Ok(v) = std::env::var(name)
        && !v.is_empty()
    {
        return Some(v);
    }
    let file = std::env::var("BERTH_TEST_SERVICES").map_or_else(
        |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-services.env"),
        PathBuf::from,
    );
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().to_string())
}

/// The PostgreSQL server of the tests (a `postgres://` URL of a database that
/// may create databases); panics with what to do when there is none.
pub fn postgres_server() -> String {
    service_var("BERTH_TEST_POSTGRES").unwrap_or_else(|| {
        panic!(
            "the PostgreSQL tests need a server: run tests/services/start.sh (CI does), \
             or set BERTH_TEST_POSTGRES=postgres://USER@HOST:PORT/DB"
        )
    })
}

/// Create an empty database on the test server; its URL.
pub async fn fresh_postgres_database() -> String {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let server = postgres_server();
    let mut bytes = [0u8; 8];
    crate::secrets::random_bytes(&mut bytes);
    let name = format!("berth_t_{}", hex::encode(bytes));
    let mut conn = sqlx::AnyConnection::connect(&server)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test PostgreSQL at {server}: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("CREATE DATABASE");
    let (base, _) = server.rsplit_once('/').expect("a URL with a database name");
    format!("{base}/{name}")
}

/// A store location of a test: a temporary directory for SQLite, or a fresh
/// PostgreSQL database.
pub struct Fixture {
    pub url: String,
    pub dir: tempfile_path::TempPath,
}

impl Fixture {
    pub async fn new(engine: Engine) -> Fixture {
        let dir = tempfile_path::TempPath::new();
        let url = match engine {
            Engine::Sqlite => format!("sqlite://{}?mode=rwc", dir.path().join("meta.db").display()),
            Engine::Postgres => fresh_postgres_database().await,
        };
        Fixture { url, dir }
    }

    /// Open (or reopen) the store.
    pub async fn open(&self) -> MetadataStore {
        MetadataStore::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.url))
    }
}

/// A temporary directory removed on drop (the library cannot use the
/// `tempfile` dev-dependency).
pub mod tempfile_path {
    pub struct TempPath(std::path::PathBuf);

    impl TempPath {
        pub fn new() -> TempPath {
            let mut bytes = [0u8; 8];
            crate::secrets::random_bytes(&mut bytes);
            let p = std::env::temp_dir().join(format!("berth-test-{}", hex::encode(bytes)));
            std::fs::create_dir_all(&p).expect("a temp dir");
            TempPath(p)
        }

        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Default for TempPath {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Each named test `async fn name(engine: Engine)` of the calling module, as
/// `sqlite::name` and `postgres::name`.
#[cfg(test)]
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(super::Engine::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(super::Engine::Postgres).await } )*
        }
    };
}
#[cfg(test)]
pub(crate) use on_both_engines;

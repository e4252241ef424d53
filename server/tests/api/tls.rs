//! TLS to PostgreSQL: a cluster of its own serving a certificate from a test authority; the pool
//! and the migration runner connect with `sslmode` and `sslrootcert` as libpq's users write them.

use std::path::{Path, PathBuf};

use plume::db::embedded::{ClusterOptions, EmbeddedCluster};
use plume::db::{self, migrate, PoolSettings};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A certificate authority and the PEM files a TLS cluster and its clients need.
struct Authority {
    params: CertificateParams,
    key: KeyPair,
}

impl Authority {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Self {
            params,
            key: KeyPair::generate().unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.params.clone().self_signed(&self.key).unwrap().pem()
    }

    /// A server certificate for `localhost` and 127.0.0.1, signed by this authority: (cert, key).
    fn issue_server(&self) -> (String, String) {
        let issuer = self.params.clone().self_signed(&self.key).unwrap();
        let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Hands `path` to the cluster's user when the tests run as root (the cluster runs as `postgres`).
fn hand_to_cluster_user(path: &Path) {
    let uid = std::process::Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
        let status = std::process::Command::new("chown")
            .arg("postgres:postgres")
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// Writes `contents` to `path` readable by its owner only, the cluster's user (PostgreSQL refuses
/// a key file that others can read).
fn write_private(path: &Path, contents: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    hand_to_cluster_user(path);
}

/// A throwaway cluster with `ssl = on`, its certificate issued by `authority`; returns it and the
/// directory holding it, its certificate and room for the clients' files.
fn start_tls_cluster(authority: &Authority) -> (EmbeddedCluster, PathBuf) {
    let dir = std::env::temp_dir().join(format!("plume-tls-{}", uuid::Uuid::new_v4().simple()));
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let (cert, key) = authority.issue_server();
    write_private(&certs.join("server.crt"), &cert);
    write_private(&certs.join("server.key"), &key);
    let options = ClusterOptions {
        ephemeral: true,
        settings: vec![
            ("ssl".into(), "on".into()),
            (
                "ssl_cert_file".into(),
                certs.join("server.crt").display().to_string(),
            ),
            (
                "ssl_key_file".into(),
                certs.join("server.key").display().to_string(),
            ),
        ],
        ..ClusterOptions::new(dir.join("cluster"))
    };
    hand_to_cluster_user(&dir);
    hand_to_cluster_user(&certs);
    let cluster = EmbeddedCluster::start(&options).expect("starting a TLS cluster");
    (cluster, dir)
}

/// The cluster's URL for `postgres` with `host=localhost` (the name the certificate carries) and
/// the given query parameters.
fn url_with(cluster: &EmbeddedCluster, parameters: &str) -> String {
    let url = cluster.url("postgres").replace("@127.0.0.1:", "@localhost:");
    format!("{url}?{parameters}")
}

async fn is_encrypted(url: &str) -> bool {
    let pool = db::connect(url, &PoolSettings::default()).await.unwrap();
    let ssl: bool = sqlx::query_scalar("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    ssl
}

#[tokio::test]
async fn verify_full_connects_with_the_right_authority_and_refuses_any_other() {
    let authority = Authority::new("plume test authority");
    let (cluster, dir) = tokio::task::spawn_blocking({
        let authority = Authority {
            params: authority.params.clone(),
            key: KeyPair::from_pem(&authority.key.serialize_pem()).unwrap(),
        };
        move || start_tls_cluster(&authority)
    })
    .await
    .unwrap();
    let right = dir.join("right-ca.pem");
    std::fs::write(&right, authority.pem()).unwrap();
    let wrong = dir.join("wrong-ca.pem");
    std::fs::write(&wrong, Authority::new("someone else").pem()).unwrap();

    let verified = url_with(
        &cluster,
        &format!("sslmode=verify-full&sslrootcert={}", right.display()),
    );
    assert!(
        is_encrypted(&verified).await,
        "verify-full with the right CA is encrypted"
    );
    // The migration runner connects the same way: it migrates over the verified link.
    let applied = migrate::run(&verified).await.expect("migrating over verify-full");
    assert!(!applied.is_empty());

    let refused = url_with(
        &cluster,
        &format!("sslmode=verify-full&sslrootcert={}", wrong.display()),
    );
    let error = db::connect(&refused, &PoolSettings::default()).await.unwrap_err();
    assert!(
        error.to_string().to_lowercase().contains("certificate"),
        "a certificate error, got: {error}"
    );
    let error = migrate::run(&refused).await.unwrap_err();
    assert!(
        error.to_string().to_lowercase().contains("certificate"),
        "got: {error}"
    );

    // `require` encrypts without checking whom it talks to; `disable` does not encrypt.
    assert!(is_encrypted(&url_with(&cluster, "sslmode=require")).await);
    assert!(!is_encrypted(&url_with(&cluster, "sslmode=disable")).await);
    tokio::task::spawn_blocking(move || cluster.stop()).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

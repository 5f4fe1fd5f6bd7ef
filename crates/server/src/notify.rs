//! Notifications: a transition writes its mails to the outbox in its own
//! transaction (so none is lost, and none is sent for a transition that
//! did not happen); the mailer sends them through the site's SMTP relay
//! (`--smtp-relay`, `--mail-from`) and records each one sent, or its error
//! and a try more, up to [`MAX_ATTEMPTS`]. Without a relay the mails wait
//! in the outbox.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::state::Shared;
use crate::store::{self, commit::Op};

/// Tries of one mail before the mailer leaves it (its error stays in the
/// outbox).
pub const MAX_ATTEMPTS: i64 = 10;

/// The site's mail relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    /// `HOST:PORT` of a relay that accepts the server's mail (plain SMTP,
    /// as a site's local relay; it does the delivery).
    pub relay: String,
    /// The sender's address.
    pub from: String,
}

impl SmtpConfig {
    /// Checks the relay's `HOST:PORT` and the sender's address.
    pub fn new(relay: &str, from: &str) -> Result<SmtpConfig, String> {
        let (host, port) = relay
            .rsplit_once(':')
            .ok_or_else(|| format!("--smtp-relay `{relay}`: expected HOST:PORT"))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!("--smtp-relay `{relay}`: expected HOST:PORT"));
        }
        let from =
            crate::names::valid_email(from).map_err(|e| format!("--mail-from: {}", e.message))?;
        Ok(SmtpConfig {
            relay: relay.to_string(),
            from,
        })
    }
}

/// One line of a subject: control characters (a line break a tenant put
/// in a title, say) become spaces.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect()
}

/// The outbox rows of one notification to each of `users` who gave an
/// address (to be written in the transaction of what it tells).
pub fn mails(s: &Shared, users: &[i64], subject: &str, body: &str) -> Vec<Op> {
    let now = s.clock.now();
    let subject = one_line(subject);
    users
        .iter()
        .filter_map(|&u| s.tenancy.email(u))
        .map(|addr| {
            let id = s
                .outbox_id
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1;
            store::outbox::insert(id, now, &addr, &subject, body)
        })
        .collect()
}

/// Sends what waits in the outbox, once a second, until `stop`.
pub fn spawn_mailer(
    shared: Arc<Shared>,
    cfg: SmtpConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (host, port) = cfg.relay.rsplit_once(':').unwrap_or((&cfg.relay, "25"));
        let relay = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port.parse().unwrap_or(25))
            .timeout(Some(Duration::from_secs(20)))
            .build();
        loop {
            if let Err(e) = send_waiting(&shared, &cfg, &relay).await {
                tracing::warn!("mailer: the outbox cannot be read or written: {e}");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                r = stop.wait_for(|v| *v) => if r.is_ok() { return },
            }
        }
    })
}

async fn send_waiting(
    s: &Shared,
    cfg: &SmtpConfig,
    relay: &AsyncSmtpTransport<Tokio1Executor>,
) -> Result<(), sqlx::Error> {
    for m in store::outbox::unsent(&s.store.pool, MAX_ATTEMPTS, 50).await? {
        let msg = Message::builder()
            .from(cfg.from.parse().expect("checked at start"))
            .to(match m.recipient.parse() {
                Ok(a) => a,
                Err(e) => {
                    write(s, store::outbox::failed(m.id, &format!("recipient: {e}"))).await?;
                    continue;
                }
            })
            .subject(&m.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(m.body.clone());
        let op = match msg {
            Err(e) => store::outbox::failed(m.id, &e.to_string()),
            Ok(msg) => match relay.send(msg).await {
                Ok(_) => store::outbox::sent(m.id, s.clock.now()),
                Err(e) => {
                    tracing::warn!(
                        "mailer: mail {} to {} not sent (try {}): {e}",
                        m.id,
                        m.recipient,
                        m.attempts + 1
                    );
                    store::outbox::failed(m.id, &e.to_string())
                }
            },
        };
        write(s, op).await?;
    }
    Ok(())
}

async fn write(s: &Shared, op: Op) -> Result<(), sqlx::Error> {
    s.store.write(vec![op]).await
}

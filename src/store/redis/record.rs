//! The session's record in Redis: a hash with a generation counter and the tokens as
//! `FileStore`'s versioned JSON (see [`RedisStore`](super::RedisStore) for the layout), and
//! the Lua scripts that read and write it.

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use redis::{Connection, RedisResult, Script};

use crate::store::record::{self, Record};
use crate::store::{Revision, Stored};
use crate::tokens::{Lineage, Tokens};

/// The two keys of one session. They share a hash tag (`{session}`), so the scripts that
/// touch both also run where keys are spread over nodes by hash slot.
pub(super) struct Keys {
    /// The session's name, as given.
    pub(super) session: String,
    /// `{session}:tokens`: the record (a hash).
    pub(super) record: String,
    /// `{session}:lock`: the lease (a string holding the owner, with an expiry).
    pub(super) lock: String,
}

impl Keys {
    pub(super) fn new(session: &str) -> Keys {
        Keys {
            session: session.to_owned(),
            record: format!("{{{session}}}:tokens"),
            lock: format!("{{{session}}}:lock"),
        }
    }
}

/// The record as read: its generation as stored (`"0"`: never written) and its `tokens`
/// field (`None`: never written, or logged out), not yet parsed; what a logout record says
/// it ended; the id of the write that stored it; and how much longer a token call declared
/// by a holder may be in flight, if one is.
pub(super) struct Raw {
    /// Compared as text by the commit script.
    pub(super) generation: String,
    pub(super) tokens: Option<Vec<u8>>,
    /// A logout record: the lineage of the session it ended.
    pub(super) ended: Option<String>,
    /// The id of the write that stored this record (see `COMMIT`).
    pub(super) writer: Option<String>,
    /// A holder's live intent (see `INTENT`): how many more milliseconds (by Redis' clock)
    /// its token call, and the write of its answer, may take.
    pub(super) intent_ms: Option<u64>,
}

impl Raw {
    /// Its generation as a number.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidData`] if it is not a whole number.
    pub(super) fn generation(&self, keys: &Keys) -> io::Result<u64> {
        generation_of(&self.generation, keys)
    }

    /// The tokens it holds, as a [`Stored`] at its generation.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidData`] if the generation is not a number or the `tokens` field
    /// is not a valid token record (never quoting it).
    pub(super) fn parse(&self, keys: &Keys) -> io::Result<Stored> {
        let generation = Revision::new(self.generation(keys)?);
        Ok(match &self.tokens {
            // A lineage that does not parse names no session.
            None => Stored::logged_out(self.ended.as_deref().and_then(Lineage::parse), generation),
            Some(bytes) => Stored::new(
                Some(
                    record::parse(bytes, &format_args!("Redis record {}", keys.record))?
                        .to_tokens(),
                ),
                generation,
            ),
        })
    }
}

/// The generation a write stores: above `floor` (the highest this store knows), and at
/// least the writer's clock in milliseconds since the Unix epoch. Generations only grow, and
/// a record written after Redis lost its data (a restart without persistence, an old
/// snapshot) is still newer than every record written before.
pub(super) fn next_generation(floor: u64) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
    floor.saturating_add(1).max(now)
}

/// Reads the record (one round trip, the `READ` script): its answer, for [`read_raw`].
pub(super) fn read(
    conn: &mut Connection,
    scripts: &Scripts,
    keys: &Keys,
) -> RedisResult<Vec<redis::Value>> {
    scripts.read.key(&keys.record).invoke(conn)
}

/// The record from a `READ` answer.
///
/// # Errors
/// [`io::ErrorKind::InvalidData`] for an answer of an unexpected shape.
pub(super) fn read_raw(answer: Vec<redis::Value>, keys: &Keys) -> io::Result<Raw> {
    // After its status (always 1).
    raw_of(answer.into_iter().skip(1), keys)
}

/// What a write stores in the `tokens` field: the token JSON, or empty for a logout.
///
/// # Errors
/// [`io::ErrorKind::InvalidInput`] for tokens that cannot be stored.
pub(super) fn encode(tokens: Option<&Tokens>) -> io::Result<(Vec<u8>, Option<Tokens>)> {
    match tokens {
        None => Ok((Vec::new(), None)),
        Some(t) => {
            let rec = Record::from_tokens(t)?;
            // As read back: absolute expiry and issue time.
            Ok((rec.to_json(), Some(rec.to_tokens())))
        }
    }
}

/// Redis' clock in milliseconds (`TIME`), the one clock intents are kept by: prepended to
/// every script that reads or writes an intent's end.
const NOW_MS: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
";

/// The record's fields as `READ` and `ACQUIRE` return them, after their status: generation,
/// tokens, ended lineage, writer, intent owner, intent token, and the intent's remaining
/// milliseconds by Redis' clock (`-1`: none, or it ran out).
const FIELDS: &str = r"
local function fields(record)
  local f = redis.call('HMGET', record, 'generation', 'tokens', 'lineage', 'writer',
    'intent_owner', 'intent_token', 'intent_until')
  local left = -1
  if f[7] then
    local now = now_ms()
    local until_ms = tonumber(f[7]) or 0
    if until_ms > now then left = until_ms - now end
  end
  return {f[1] or '0', f[2] or '', f[3] or '', f[4] or '', f[5] or '', f[6] or '', left}
end
";

/// Reads the record. KEYS: record. Returns `{1, fields…}` (see `FIELDS`).
pub(super) const READ: &str = r"
local f = fields(KEYS[1])
return {1, f[1], f[2], f[3], f[4], f[5], f[6], f[7]}
";

/// Takes the lease if it is free (or already ours: a retried attempt whose answer was lost)
/// and reads the record under it, in one round trip.
///
/// KEYS: record, lock. ARGV: owner, lease in ms. Returns `{1, fields…}` (see `FIELDS`) or
/// `{0}` when another owner holds the lease.
pub(super) const ACQUIRE: &str = r"
local holder = redis.call('GET', KEYS[2])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
elseif holder or not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {0}
end
local f = fields(KEYS[1])
return {1, f[1], f[2], f[3], f[4], f[5], f[6], f[7]}
";

/// Extends the lease if it is still ours. KEYS: lock. ARGV: owner, lease in ms. Returns 1 if
/// extended, 0 if the lease is gone or another owner's.
pub(super) const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Right before a token call: if the lease is still ours, extends it and records in the
/// record which refresh token the holder presents and until when (Redis' clock) its call
/// and the write of its answer may take, in one step. While that intent is live, another
/// holder that would present the same refresh token waits for the record to move instead
/// (see `lease::wait_out_intent`), and the intent's owner may still write its answer
/// after its lease ran out (see `COMMIT`).
///
/// KEYS: lock, record. ARGV: owner, lease in ms, token fingerprint, intent in ms. Returns
/// 1, or 0 (nothing recorded) if the lease is gone or another owner's.
pub(super) const INTENT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], 'intent_owner', ARGV[1], 'intent_token', ARGV[3],
  'intent_until', tostring(now_ms() + tonumber(ARGV[4])))
return 1
";

/// Releases the lease if it is still ours (compare-and-delete), and with it an intent of
/// ours: the call is over (its answer written, or nothing spent) and nobody else can have
/// been waiting for it. An intent whose lease lapsed is left to run out: another holder may
/// be waiting for an answer this one could not write. KEYS: lock, record. ARGV: owner.
pub(super) const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if redis.call('HGET', KEYS[2], 'intent_owner') == ARGV[1] then
    redis.call('HDEL', KEYS[2], 'intent_owner', 'intent_token', 'intent_until')
  end
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Writes the record if nobody else wrote it since it was read (compare-and-set on the
/// generation), and either no other owner holds the lease or this writer's intent is still
/// live (its token call was declared before its lease ran out: the holder now waits for
/// this very answer rather than present the same refresh token). A holder whose lease ran
/// out can never overwrite a newer record. A lease that ran out with nobody else taking it
/// (and so nobody else writing) does not refuse the write.
///
/// Every write carries a random id, stored as `writer`: a commit whose answer was lost (the
/// connection broke after Redis applied it) is recognised when read back or sent again (its
/// id and the generation it stored, both still in the record), so a write that happened is
/// never reported failed, nor applied twice; one that was overwritten since is refused.
///
/// KEYS: record, lock. ARGV: owner, generation read, new generation, tokens (`""`: logged
/// out, the field is removed), write id, the lineage a logout ends (`""`: none). Returns
/// `{1, generation}`, `{0, generation now}` if the record moved on, or `{-1, generation now}`
/// if another owner holds the lease.
pub(super) const COMMIT: &str = r"
local current = redis.call('HGET', KEYS[1], 'generation') or '0'
if current == ARGV[3] and redis.call('HGET', KEYS[1], 'writer') == ARGV[5] then
  return {1, current}
end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then
  local live = false
  if redis.call('HGET', KEYS[1], 'intent_owner') == ARGV[1] then
    live = (tonumber(redis.call('HGET', KEYS[1], 'intent_until')) or 0) > now_ms()
  end
  if not live then
    return {-1, current}
  end
end
if current ~= ARGV[2] then
  return {0, current}
end
redis.call('HDEL', KEYS[1], 'intent_owner', 'intent_token', 'intent_until')
if ARGV[4] == '' then
  redis.call('HDEL', KEYS[1], 'tokens', 'lineage')
  if ARGV[6] ~= '' then
    redis.call('HSET', KEYS[1], 'lineage', ARGV[6])
  end
  redis.call('HSET', KEYS[1], 'generation', ARGV[3], 'writer', ARGV[5])
else
  redis.call('HDEL', KEYS[1], 'lineage')
  redis.call('HSET', KEYS[1], 'generation', ARGV[3], 'tokens', ARGV[4], 'writer', ARGV[5])
end
return {1, ARGV[3]}
";

/// The scripts, hashed once per store (`EVALSHA`, loaded again after a Redis restart).
pub(super) struct Scripts {
    pub(super) read: Script,
    pub(super) intent: Script,
    pub(super) acquire: Script,
    pub(super) renew: Script,
    pub(super) release: Script,
    pub(super) commit: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        let with_clock = |body: &str| Script::new(&format!("{NOW_MS}{body}"));
        let with_fields = |body: &str| Script::new(&format!("{NOW_MS}{FIELDS}{body}"));
        Scripts {
            read: with_fields(READ),
            intent: with_clock(INTENT),
            acquire: with_fields(ACQUIRE),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            commit: with_clock(COMMIT),
        }
    }
}

/// Parses an acquire's answer: the record read under the lease, or `None` if another owner
/// holds it.
pub(super) fn acquired(answer: Vec<redis::Value>, keys: &Keys) -> io::Result<Option<Raw>> {
    let mut fields = answer.into_iter();
    let took: i64 = field(fields.next(), keys)?.unwrap_or(0);
    if took != 1 {
        return Ok(None);
    }
    raw_of(fields, keys).map(Some)
}

/// The record from the fields of a `READ` or `ACQUIRE` answer (after its status). The
/// `tokens` field is kept as bytes (a field that is not a valid token record is reported
/// unreadable when parsed, never read as a logout); a generation that is not text is an
/// error; the other fields (ended lineage, writer, intent), written only by tokengate, read
/// as absent when they are not what it writes.
fn raw_of(mut fields: impl Iterator<Item = redis::Value>, keys: &Keys) -> io::Result<Raw> {
    let invalid = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected answer from Redis for {}", keys.record),
        )
    };
    let generation = fields
        .next()
        .map(redis::from_redis_value::<String>)
        .transpose()
        .map_err(|_| invalid())?
        .filter(|g| !g.is_empty())
        .unwrap_or_else(|| "0".into());
    let tokens = fields
        .next()
        .map(redis::from_redis_value::<Vec<u8>>)
        .transpose()
        .map_err(|_| invalid())?
        .filter(|t| !t.is_empty());
    let mut text = || -> Option<String> {
        let v = fields.next()?;
        redis::from_redis_value::<String>(v)
            .ok()
            .filter(|s| !s.is_empty())
    };
    let ended = text();
    let writer = text();
    // A declared call: its owner and fingerprint are the script's to compare; here only
    // whether one is live, and for how long.
    let (owner, token) = (text(), text());
    let declared = owner.is_some() && token.is_some();
    let remaining = fields
        .next()
        .and_then(|v| redis::from_redis_value::<i64>(v).ok());
    let intent_ms = remaining
        .filter(|ms| declared && *ms > 0)
        .map(i64::unsigned_abs);
    Ok(Raw {
        generation,
        tokens,
        ended,
        writer,
        intent_ms,
    })
}

/// A generation as stored (decimal text) as a number.
///
/// # Errors
/// [`io::ErrorKind::InvalidData`] if it is not a whole number.
fn generation_of(text: &str, keys: &Keys) -> io::Result<u64> {
    text.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "Redis record {} has a \"generation\" that is not a whole number",
                keys.record
            ),
        )
    })
}

/// Parses a commit's answer: `Ok(new generation)`, or the refusal and the generation now.
pub(super) fn committed(
    answer: Vec<redis::Value>,
    keys: &Keys,
) -> io::Result<Result<u64, (Refused, u64)>> {
    let mut fields = answer.into_iter();
    let status: i64 = field(fields.next(), keys)?.unwrap_or(0);
    let generation: Option<String> = field(fields.next(), keys)?;
    let generation = generation_of(generation.as_deref().unwrap_or("0"), keys)?;
    Ok(match status {
        1 => Ok(generation),
        -1 => Err((Refused::LeaseTaken, generation)),
        _ => Err((Refused::Moved, generation)),
    })
}

/// Why a commit was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// Another process wrote the record since it was read.
    Moved,
    /// The lease ran out and another process holds it now.
    LeaseTaken,
}

fn field<T: redis::FromRedisValue>(
    value: Option<redis::Value>,
    keys: &Keys,
) -> io::Result<Option<T>> {
    let Some(value) = value else {
        return Ok(None);
    };
    redis::from_redis_value(value).map(Some).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected answer from Redis for {}", keys.record),
        )
    })
}

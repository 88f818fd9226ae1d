//! The session's record in Redis: a hash with a generation counter and the tokens as
//! `FileStore`'s versioned JSON (see [`RedisStore`](super::RedisStore) for the layout), and
//! the Lua scripts that read and write it.

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use redis::{Connection, RedisResult, Script};

use crate::store::file::record::{self, Record};
use crate::store::{Revision, Stored};
use crate::tokens::Tokens;

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
/// field (`None`: never written, or logged out), not yet parsed.
pub(super) struct Raw {
    /// Compared as text by the commit script.
    pub(super) generation: String,
    pub(super) tokens: Option<Vec<u8>>,
}

impl Raw {
    /// Its generation as a number.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidData`] if it is not a whole number.
    pub(super) fn generation(&self, keys: &Keys) -> io::Result<u64> {
        self.generation.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "Redis record {} has a \"generation\" that is not a whole number",
                    keys.record
                ),
            )
        })
    }

    /// The tokens it holds, as a [`Stored`] at its generation.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidData`] if the generation is not a number or the `tokens` field
    /// is not a valid token record (never quoting it).
    pub(super) fn parse(&self, keys: &Keys) -> io::Result<Stored> {
        let generation = self.generation(keys)?;
        let tokens = match &self.tokens {
            None => None,
            Some(bytes) => Some(
                record::parse(bytes, &format_args!("Redis record {}", keys.record))?.to_tokens(),
            ),
        };
        Ok(Stored::new(tokens, Revision::new(generation)))
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

/// Reads the record (one `HMGET`).
pub(super) fn read(conn: &mut Connection, keys: &Keys) -> RedisResult<Raw> {
    let (generation, tokens): (Option<String>, Option<Vec<u8>>) = redis::cmd("HMGET")
        .arg(&keys.record)
        .arg("generation")
        .arg("tokens")
        .query(conn)?;
    Ok(Raw {
        generation: generation.unwrap_or_else(|| "0".into()),
        tokens,
    })
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

/// Takes the lease if it is free (or already ours: a retried attempt whose answer was lost)
/// and reads the record under it, in one round trip.
///
/// KEYS: record, lock. ARGV: owner, lease in ms. Returns `{1, generation, tokens}` (tokens
/// `""` when there are none) or `{0}` when another owner holds the lease.
pub(super) const ACQUIRE: &str = r"
local holder = redis.call('GET', KEYS[2])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
elseif holder or not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {0}
end
local fields = redis.call('HMGET', KEYS[1], 'generation', 'tokens')
return {1, fields[1] or '0', fields[2] or ''}
";

/// Extends the lease if it is still ours. KEYS: lock. ARGV: owner, lease in ms. Returns 1 if
/// extended, 0 if the lease is gone or another owner's.
pub(super) const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Releases the lease if it is still ours (compare-and-delete). KEYS: lock. ARGV: owner.
pub(super) const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Writes the record if nobody else wrote it since it was read (compare-and-set on the
/// generation) and no other owner holds the lease: a holder whose lease ran out can never
/// overwrite a newer record. A lease that ran out with nobody else taking it (and so nobody
/// else writing) does not refuse the write.
///
/// A commit run a second time after its answer was lost (the connection broke after Redis
/// applied it, and the command was sent again on a new connection) finds the record it wrote
/// and reports it done: a write that happened is never reported as failed, which would make
/// the client write an unsaved login or logout again over whatever came after it.
///
/// KEYS: record, lock. ARGV: owner, generation read, new generation, tokens (`""`: logged
/// out, the field is removed). Returns `{1, new generation}`, `{0, generation now}` if the
/// record moved on, or `{-1, generation now}` if another owner holds the lease.
pub(super) const COMMIT: &str = r"
local holder = redis.call('GET', KEYS[2])
local current = redis.call('HGET', KEYS[1], 'generation') or '0'
if current == ARGV[3] and (redis.call('HGET', KEYS[1], 'tokens') or '') == ARGV[4] then
  return {1, ARGV[3]}
end
if holder and holder ~= ARGV[1] then
  return {-1, current}
end
if current ~= ARGV[2] then
  return {0, current}
end
if ARGV[4] == '' then
  redis.call('HDEL', KEYS[1], 'tokens')
  redis.call('HSET', KEYS[1], 'generation', ARGV[3])
else
  redis.call('HSET', KEYS[1], 'generation', ARGV[3], 'tokens', ARGV[4])
end
return {1, ARGV[3]}
";

/// The scripts, hashed once per store (`EVALSHA`, loaded again after a Redis restart).
pub(super) struct Scripts {
    pub(super) acquire: Script,
    pub(super) renew: Script,
    pub(super) release: Script,
    pub(super) commit: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        Scripts {
            acquire: Script::new(ACQUIRE),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            commit: Script::new(COMMIT),
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
    let generation: Option<String> = field(fields.next(), keys)?;
    let tokens: Option<Vec<u8>> = field(fields.next(), keys)?;
    Ok(Some(Raw {
        generation: generation.unwrap_or_else(|| "0".into()),
        tokens: tokens.filter(|t| !t.is_empty()),
    }))
}

/// Parses a commit's answer: `Ok(new generation)`, or the refusal and the generation now.
pub(super) fn committed(
    answer: Vec<redis::Value>,
    keys: &Keys,
) -> io::Result<Result<u64, (Refused, u64)>> {
    let mut fields = answer.into_iter();
    let status: i64 = field(fields.next(), keys)?.unwrap_or(0);
    let generation: Option<String> = field(fields.next(), keys)?;
    let generation = Raw {
        generation: generation.unwrap_or_else(|| "0".into()),
        tokens: None,
    }
    .generation(keys)?;
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

//! An in-memory ureq transport: every request sent gets the same canned `200 ok` answer, with
//! no socket and no other thread. It takes all I/O out of the measurement, so what is left is
//! the CPU cost of building and parsing requests in ureq, and in tokengate around it.

use tokengate::ureq::unversioned::resolver::DefaultResolver;
use tokengate::ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, Transport,
};
use tokengate::ureq::{Agent, Error};

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

#[derive(Debug)]
struct MemConnector;

impl Connector<()> for MemConnector {
    type Out = MemTransport;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _chained: Option<()>,
    ) -> Result<Option<Self::Out>, Error> {
        let c = details.config;
        Ok(Some(MemTransport {
            buffers: LazyBuffers::new(c.input_buffer_size(), c.output_buffer_size()),
            pending: false,
        }))
    }
}

#[derive(Debug)]
struct MemTransport {
    buffers: LazyBuffers,
    /// A request was sent and its answer not yet delivered.
    pending: bool,
}

impl Transport for MemTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, _amount: usize, _timeout: NextTimeout) -> Result<(), Error> {
        self.pending = true;
        Ok(())
    }

    fn await_input(&mut self, _timeout: NextTimeout) -> Result<bool, Error> {
        if !self.pending {
            return Ok(false);
        }
        self.pending = false;
        let buf = self.buffers.input_append_buf();
        buf[..OK.len()].copy_from_slice(OK);
        self.buffers.input_appended(OK.len());
        Ok(true)
    }

    fn is_open(&mut self) -> bool {
        true
    }
}

/// An agent whose every request is answered in memory (same settings as the bench's agent,
/// plus an optional global timeout).
pub fn agent(timeout: Option<std::time::Duration>) -> Agent {
    let config = Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .max_redirects(0)
        .max_idle_connections(4096)
        .max_idle_connections_per_host(4096)
        .timeout_global(timeout)
        .build();
    Agent::with_parts(config, MemConnector, DefaultResolver::default())
}

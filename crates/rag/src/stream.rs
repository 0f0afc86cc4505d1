//! The stream of a streamed answer.

use std::pin::Pin;
use std::task::{Context, Poll};

use rag_core::{Citation, Result};
use rag_pipeline::QueryAnswer;
use tokio::sync::mpsc;

/// One event of a streamed answer, in order: `Sources` once, `Token`s, `Done` once.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The passages the answer is built from, before any text.
    Sources(Vec<Citation>),
    /// The next piece of the answer; the pieces concatenate to the final text.
    Token(String),
    /// The answer, with its citations, timings and degradations.
    Done(Box<QueryAnswer>),
}

/// A streamed answer: a [`futures_core::Stream`] of events (or call
/// [`AnswerStream::next`]). An error ends it. Dropping it stops generation within
/// one token, and a stopped answer is not cached.
#[derive(Debug)]
pub struct AnswerStream {
    pub(crate) events: mpsc::Receiver<Result<StreamEvent>>,
}

impl AnswerStream {
    /// The next event, or `None` once the answer is done (or failed).
    pub async fn next(&mut self) -> Option<Result<StreamEvent>> {
        self.events.recv().await
    }

    /// Hands each token to `on_token` as it comes and returns the whole answer.
    pub async fn tokens(mut self, mut on_token: impl FnMut(&str)) -> Result<QueryAnswer> {
        while let Some(event) = self.next().await {
            match event? {
                StreamEvent::Token(t) => on_token(&t),
                StreamEvent::Done(a) => return Ok(*a),
                StreamEvent::Sources(_) => {}
            }
        }
        Err(ended())
    }

    /// Waits for the whole answer, dropping the intermediate events.
    pub async fn answer(mut self) -> Result<QueryAnswer> {
        while let Some(event) = self.next().await {
            if let StreamEvent::Done(a) = event? {
                return Ok(*a);
            }
        }
        Err(ended())
    }
}

fn ended() -> rag_core::Error {
    rag_core::Error::backend(
        rag_core::Stage::Generate,
        "the answer stream ended without an answer",
    )
}

impl futures_core::Stream for AnswerStream {
    type Item = Result<StreamEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}

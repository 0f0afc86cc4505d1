//! The pipeline's operations checked against a caller's service roles
//! ([`rag_core::authorize`], the same check a service makes): what a verified token
//! may do, not only what it may read.

use rag_core::{DocId, DocKey, Document, Grants, Operation, Principal, Result, authorize};

use crate::{IngestReport, Pipeline, QueryAnswer, QueryOptions};

impl Pipeline {
    /// [`Pipeline::ingest`] for a caller whose grants allow ingesting in every
    /// document's tenant; otherwise `Denied` and nothing is written.
    pub fn ingest_as(&self, grants: &Grants, docs: Vec<Document>) -> Result<IngestReport> {
        for d in &docs {
            authorize(grants, &d.tenant, Operation::Ingest)?;
        }
        self.ingest(docs)
    }

    /// [`Pipeline::delete`] of a document of the grants' tenant, if they allow it.
    pub fn delete_as(&self, grants: &Grants, doc_id: &DocId) -> Result<()> {
        authorize(grants, &grants.tenant, Operation::Delete)?;
        self.delete(&DocKey::new(grants.tenant.clone(), doc_id.clone()))
    }

    /// [`Pipeline::erase`] of a document of the grants' tenant, if they allow it.
    pub fn erase_as(&self, grants: &Grants, doc_id: &DocId) -> Result<()> {
        authorize(grants, &grants.tenant, Operation::Erase)?;
        self.erase(&DocKey::new(grants.tenant.clone(), doc_id.clone()))
    }

    /// [`Pipeline::query`] for a principal whose grants (of its own tenant) allow
    /// asking.
    pub fn query_as(
        &self,
        grants: &Grants,
        principal: &Principal,
        question: &str,
        options: &QueryOptions,
    ) -> Result<QueryAnswer> {
        authorize(grants, &principal.tenant, Operation::Query)?;
        self.query(principal, question, options)
    }
}

#![allow(clippy::print_stdout, missing_docs)]
use rag::prelude::*;
#[tokio::main]
async fn main() -> Result<(), rag::Error> {
    let rag = Rag::builder().local_models()?.in_memory()?;
    let ann = rag.register(Principal::new("acme", "ann").with_group("staff"));
    let doc = Document::new("acme", "faq", "Expenses are approved by the team lead.");
    rag.ingest(vec![doc.readable_by_group("staff")]).await?;
    let stream = rag.stream(&ann, "Who approves expenses?").await?;
    let answer = stream.tokens(|t| print!("{t}")).await?;
    println!("\ncited: {:?}", answer.answer.citations);
    Ok(())
}

"""LangChain: the router as the compressor of a ContextualCompressionRetriever (offline, default config).

pip install 'rerank-router[langchain]'; python examples/langchain_retriever.py
"""

from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.vectorstores import InMemoryVectorStore

from router import Router
from router.integrations.langchain import RouterReranker

TEXTS = [
    "Black tea leaves are oxidised fully before drying.",
    "Green tea is steamed soon after picking, which stops oxidation.",
    "A derailleur moves the chain between sprockets.",
    "The difference between green and black tea is oxidation.",
]

store = InMemoryVectorStore(DeterministicFakeEmbedding(size=32))  # stands in for your vector store
store.add_documents([Document(page_content=t, metadata={"n": i}) for i, t in enumerate(TEXTS)])

router = Router()  # $RERANK_ROUTER_CONFIG, else the packaged default (offline, on-premise)
router.warm_up()
retriever = ContextualCompressionRetriever(
    base_compressor=RouterReranker(router=router, top_n=2, latency_budget_ms=3000),
    base_retriever=store.as_retriever(search_kwargs={"k": 4}),
)
for doc in retriever.invoke("green vs black tea"):
    info = doc.metadata["rerank_router"]
    print(f"{doc.metadata['relevance_score']:.3f} {info['backends']} {doc.page_content}")
router.close()

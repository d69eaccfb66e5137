"""Haystack: InMemoryBM25Retriever -> the router's ranker, saved to YAML and loaded back (offline).

pip install 'rerank-router[haystack]'; python examples/haystack_pipeline.py
"""

from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.document_stores.in_memory import InMemoryDocumentStore

from router.integrations.haystack import RouterRanker

store = InMemoryDocumentStore()
store.write_documents(
    [
        Document(content="Black tea leaves are oxidised fully before drying."),
        Document(content="Green tea is steamed soon after picking, which stops oxidation."),
        Document(content="A derailleur moves the chain between sprockets."),
        Document(content="The difference between green and black tea is oxidation."),
    ]
)
pipeline = Pipeline()
pipeline.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=10))
pipeline.add_component("ranker", RouterRanker(config="default", top_k=2, latency_budget_ms=3000))  # a path or mapping
pipeline.connect("retriever.documents", "ranker.documents")

loaded = Pipeline.loads(pipeline.dumps(), allowed_modules=["router.integrations.haystack"])  # init params are plain YAML
loaded.warm_up()  # builds the Router and loads its local models
query = "green vs black tea"
for doc in loaded.run({"retriever": {"query": query}, "ranker": {"query": query}})["ranker"]["documents"]:
    print(f"{doc.score:.3f} {doc.meta['rerank_router']['backends']} {doc.content}")

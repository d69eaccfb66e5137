"""LlamaIndex: the router as a node postprocessor in a query engine (offline: mock embeddings and LLM).

pip install 'rerank-router[llamaindex]'; python examples/llamaindex_query_engine.py
"""

from llama_index.core import Settings, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.schema import TextNode

from router import Router
from router.integrations.llamaindex import RouterNodePostprocessor

TEXTS = [
    "Black tea leaves are oxidised fully before drying.",
    "Green tea is steamed soon after picking, which stops oxidation.",
    "A derailleur moves the chain between sprockets.",
    "The difference between green and black tea is oxidation.",
]

Settings.embed_model, Settings.llm = MockEmbedding(embed_dim=16), MockLLM(max_tokens=16)  # your models here
index = VectorStoreIndex([TextNode(text=t) for t in TEXTS])

router = Router()  # the packaged default config: offline, on-premise
router.warm_up()
engine = index.as_query_engine(similarity_top_k=4, node_postprocessors=[RouterNodePostprocessor(router=router, top_n=2)])
response = engine.query("green vs black tea")
for node in response.source_nodes:
    info = node.node.metadata["rerank_router"]
    print(
        f"{node.score:.3f} (retrieval {node.node.metadata['retrieval_score']:.3f}) {info['backends']} {node.node.get_content()}"
    )
router.close()

"""Drop-in components for the frameworks RAG code already lives in, and batch scale-out.

One module per framework, each behind its own extra and imported only when used (this package
imports none of them; ``import router`` does not import this package):

| module                          | component                                  | extra         |
|---------------------------------|--------------------------------------------|---------------|
| ``router.integrations.langchain``  | ``RouterReranker`` (``BaseDocumentCompressor``) | ``langchain`` |
| ``router.integrations.llamaindex`` | ``RouterNodePostprocessor`` (``BaseNodePostprocessor``) | ``llamaindex`` |
| ``router.integrations.haystack``   | ``RouterRanker`` (a ``@component`` ranker)  | ``haystack``  |
| ``router.integrations.ray``        | ``rerank_dataset``, ``run_batch_ray`` (Ray Data actors) | ``ray`` |

A missing framework raises :class:`router.errors.MissingDependencyError` naming the extra.
"""

"""Acceptance tests of issue 13: collections written by the real LangChain, LlamaIndex and
mcp-server-qdrant code, then inspected, searched, explained and backfilled by qdrant-xai."""

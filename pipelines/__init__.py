"""Concord pipelines: the datasets Concord makes, and the jobs that train and judge models.

Pipelines may import `concord`; nothing in `concord` or `services` imports pipelines.
"""

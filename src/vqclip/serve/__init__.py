"""`vqclip serve`: a web page and a durable job service around the generation loop.

The loop knows nothing of the web: workers consume its steps through `vqclip.jobs.execute_job`,
the API describes its options from `GenerateConfig`'s one declaration.
"""

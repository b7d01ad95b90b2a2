"""ACE, the AI Consumer Index (Mercor, arXiv:2512.04921): consumer tasks graded against rubrics.

Four domains (Shopping, Food, Gaming, DIY); each task is one user prompt with a list of criteria
(hurdle or not, grounded or not, some of type "Provides link(s)"). Data: Hugging Face ``mercor/ACE``
(one config per domain) or the CSV files ``ACE-<Domain>.csv`` of GitHub
Mercor-Intelligence/apex-evals (``ace/dataset/``).

Modules: ``dataset`` (loaders: CSV file, folder of CSV files, Hugging Face -> Eval Protocol rows).
Importing this package imports nothing heavy.
"""

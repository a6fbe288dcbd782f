"""The dashboard's side of klwatch, without Streamlit: what app.py draws from.

- store.py: RunStore, the runs under the roots, read by background threads and watched;
- run_view.py: the frozen, read-only views a page reads (RunView, RunPulse, RunSummary);
- views.py: the page's logic (arguments, URL state, tables, redraw policy);
- charts.py: series → plotly figures (pure), with downsample.py and render_cache.py;
- auth.py: the optional login's page helpers.

No `st.*` calls here: app.py alone lays out the page.
"""

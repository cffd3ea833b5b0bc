"""Everything Textual: one app (``app.DashboardApp``) over a source of records
(``sources``), one widget or screen per module where it is more than a few
lines (``status_line``, ``alert``, ``eval_log``, ``sample_pane``, ``plot``,
``inspector``, ``help_screen``, ``runs_table``, ...), and the keys in one
table (``keys``).  Nothing here imports torch.

Styles: all of them in one stylesheet, ``dashboard.tcss`` (the app's
``CSS_PATH``); no widget carries ``DEFAULT_CSS``.  The rules that matter here
are about the panes together rather than one widget alone: below 120x36 the
``-compact`` class trades every pane's box for a title rule and shares the
rows out again, and the inspector's ``-inspecting`` class shrinks the rows
around it; beside their widgets those rules would be spread over five files
and the layout at 80x24 could no longer be read in one place.  The widgets
are this app's own, never reused by another app that would need their styles
to travel with them, and one stylesheet is what larger Textual apps do
(posting, harlequin: one ``CSS_PATH`` per app).  A new widget adds its block
to ``dashboard.tcss`` under a comment naming its module.
"""

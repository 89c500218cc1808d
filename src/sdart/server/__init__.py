"""`sdart serve`: an HTTP server with a persistent job queue, a native API, an A1111-compatible API and a web page.

Modules, one concern each: `store` (SQLite job queue), `worker` (runs jobs on the Engine), `events` (live
progress for SSE), `admission` (limits, queueing), `security` (auth, body cap), `native` and `a1111` (routes;
the A1111 API's payload reading in `a1111_payload`, settings in `a1111_options`, lists in `a1111_lists`, prompt
styles in `a1111_styles`), `catalog` (model names clients may use), `app` (wiring), `cli` (the command).
"""

-- GET /health: routing, serialisation and the HTTP server, nothing else.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
wrk.method = "GET"
wrk.path = "/health"

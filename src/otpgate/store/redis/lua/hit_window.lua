-- Count one hit on a fixed-window request counter, for requests that reach no other
-- store operation. Runs after window.lua, which does the counting.
--
-- KEYS: counter. ARGV[1]: {"now", "w": [limit, win]}. Returns {count, ms left in
-- the window}, then 5 when over the limit.
return {wc, wt}

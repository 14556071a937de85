// Faye's own server (npm `faye`), mounted like Halley at /cometd, for `halley bench`.
// Usage: node faye-server.mjs [port]   (prints "listening on http://127.0.0.1:PORT/cometd")
import http from "node:http";
import faye from "faye";

const port = Number(process.argv[2] ?? 8000);
const bayeux = new faye.NodeAdapter({ mount: "/cometd", timeout: 20 });
const server = http.createServer();
bayeux.attach(server);
server.listen(port, "127.0.0.1", () => console.error(`faye listening on http://127.0.0.1:${port}/cometd`));

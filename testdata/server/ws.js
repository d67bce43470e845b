// A WebSocket handshake passes through a handler that adds a header.
export default {
  outboundByHost: {
    "ws.example": (request, env) => {
      const r = new Request(request);
      r.headers.set("x-injected", env.WS_SECRET);
      return fetch(r);
    },
  },
};

export default {
  allowedHosts: ["ok.com", 42],
  outbound() { return new Response("x"); },
};

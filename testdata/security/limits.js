// Reads every request body whole in JS, so the JS body cap applies
// (proxy/server/attack_limits_test.go).
export default {
  async outbound(request) {
    const text = await request.text();
    return new Response("read " + text.length);
  },
};

// A syntax error on line 4, column 14: the closing brace is missing.
export default {
  outbound(request, env, ctx) {
    return new Response("broken";
  },
};

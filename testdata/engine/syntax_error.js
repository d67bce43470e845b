export default {
  outbound(request) {
    const x = ;
    return new Response("x");
  },
};

const a = 1;
function boom() {
  throw new Error("top-level boom");
}
boom();
export default { outbound() { return new Response("never"); } };

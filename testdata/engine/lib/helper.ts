export type Greeting = "hi" | "hello";
export function helper(s: string): string {
  return `helper:${s}`;
}

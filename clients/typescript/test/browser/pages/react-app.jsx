// A small React page: a page view on mount and a click through useTrack().
import { createRoot } from "react-dom/client";
import { createClient } from "../../../dist/browser/index.js";
import { EventlineProvider, usePageView, useTrack } from "../../../dist/react/index.js";

const params = new URLSearchParams(location.search);
const client = createClient({ baseUrl: params.get("grpc"), restUrl: params.get("rest"), apiKey: params.get("key") });
globalThis.eventline = client;

function Pricing() {
  usePageView();
  const track = useTrack();
  return (
    <button id="buy" onClick={() => track("click", { properties: { button: "buy" } })}>
      Buy
    </button>
  );
}

createRoot(document.getElementById("root")).render(
  <EventlineProvider client={client}>
    <Pricing />
  </EventlineProvider>,
);

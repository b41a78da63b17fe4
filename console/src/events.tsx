// The event table of Live and Explorer. Explorer links each time to the event's detail
// and each user to their timeline; Live shows the events as they come.
import type { EventRecord } from "./api";
import { follow, href } from "./state";
import { formatTime } from "./time";

export function EventTable({ testid, events, linked = false, selected = "" }: { testid: string; events: EventRecord[]; linked?: boolean; selected?: string }) {
  return (
    <table class="events" data-testid={testid}>
      <thead>
        <tr>
          <th scope="col">Time (UTC)</th>
          <th scope="col">Type</th>
          <th scope="col">User</th>
          <th scope="col">Properties</th>
        </tr>
      </thead>
      <tbody>
        {events.map((event) => (
          <tr key={event.event_id} data-event-id={event.event_id} class={event.event_id === selected ? "selected" : ""}>
            <td class="mono">
              {linked ? (
                <a href={href({ event: event.event_id })} onClick={follow} aria-label={`Details of ${event.event_type} at ${formatTime(event.timestamp)}`}>
                  {formatTime(event.timestamp)}
                </a>
              ) : (
                formatTime(event.timestamp)
              )}
            </td>
            <td>{event.event_type}</td>
            <td>
              {linked && event.user_id ? (
                <a href={href({ user: event.user_id, t: undefined, event: undefined })} onClick={follow} title="This user's timeline">
                  {event.user_id}
                </a>
              ) : (
                event.user_id
              )}
            </td>
            <td class="mono clip">{JSON.stringify(event.properties ?? {})}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

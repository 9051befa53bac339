// Command echo shows the Go client end to end on one relay: it joins a new channel as an echo
// responder, sends it a request, broadcasts to it, lists the channel's peers, and asks an empty
// channel (NO_RESPONDERS).
//
//	go run ./examples/echo -server 127.0.0.1:7401
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"strings"
	"time"

	"switchboard.dev/client/switchboard"
)

func main() {
	server := flag.String("server", switchboard.DefaultTarget, "the relay's gRPC address")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := run(ctx, *server); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, server string) error {
	client, err := switchboard.Dial(ctx, server)
	if err != nil {
		return err
	}
	defer client.Close()
	channel := switchboard.NewID()

	// A peer that echoes every request and passes on every broadcast.
	broadcasts := make(chan []byte, 1)
	responder, err := client.Respond(ctx, channel,
		func(ctx context.Context, req *switchboard.Request, w switchboard.ResponseWriter) error {
			_, err := io.Copy(w, req.Body) // streams: bytes go back as they come in
			return err
		},
		switchboard.OnBroadcast(func(ctx context.Context, msg *switchboard.Request) error {
			body, err := io.ReadAll(msg.Body)
			if err == nil {
				broadcasts <- body
			}
			return err
		}))
	if err != nil {
		return err
	}
	defer responder.Close()
	fmt.Printf("joined channel %s as %s\n", channel, responder.PeerID())

	response, err := client.Send(ctx, channel, strings.NewReader("hello, switchboard"))
	if err != nil {
		return err
	}
	answer, err := io.ReadAll(response)
	if err != nil {
		return err
	}
	fmt.Printf("response: %s\n", answer)

	summary, err := client.Broadcast(ctx, channel, strings.NewReader("to everyone"))
	if err != nil {
		return err
	}
	fmt.Printf("broadcast: delivered=%d dropped=%d\n", summary.Delivered, summary.Dropped)
	select {
	case body := <-broadcasts:
		fmt.Printf("broadcast received: %q\n", body)
	case <-ctx.Done():
		return ctx.Err()
	}

	peers, version, err := client.ListPeers(ctx, channel)
	if err != nil {
		return err
	}
	fmt.Printf("peers: %v (version %d)\n", peers, version)

	response, err = client.Send(ctx, switchboard.NewID(), strings.NewReader("anyone?"))
	if err == nil {
		_, err = io.ReadAll(response)
	}
	if errors.Is(err, switchboard.ErrNoResponders) {
		fmt.Println("empty channel: no responders")
		return nil
	}
	return fmt.Errorf("an empty channel answered: %v", err)
}

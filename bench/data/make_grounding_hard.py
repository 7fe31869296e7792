# Source of bench/data/grounding_hard.jsonl: fictional contexts, each with grounded answers
# (label 1) and hallucinated ones (label 0). Every label was checked by hand.
import json

C = []


def ctx(context, *cases):
    C.append((context, cases))


ctx(
    "Harlow Transit runs the Blue Line between Ostrava Quay and Penmore Hill. Trains leave every 12 minutes on weekdays, but only every 30 minutes on Sundays. Bicycles are allowed on board except during the morning rush between 7 and 9 a.m. The line opened in 2009 under director Ilse Marren.",
    (
        1,
        "paraphrase",
        "From Monday to Friday a Blue Line train departs every 12 minutes; on Sundays the gap grows to 30 minutes.",
    ),
    (
        1,
        "faithful",
        "You may bring a bike on the Blue Line, just not in the morning rush from 7 to 9 a.m.",
    ),
    (
        0,
        "swap_number",
        "Blue Line trains leave every 30 minutes on weekdays and every 12 minutes on Sundays.",
    ),
    (0, "drop_condition", "Bicycles are allowed on board Blue Line trains."),
)
ctx(
    "Corvina Labs was founded in 2011 by Lina Voss in Tallinn. Marcus Dale joined the company in 2015 as head of research. Corvina's first product, the Petrel sensor, shipped in 2013.",
    (1, "paraphrase", "Lina Voss started Corvina Labs in Tallinn in 2011."),
    (1, "faithful", "Marcus Dale came on board in 2015 to lead research at Corvina."),
    (
        0,
        "swap_entity",
        "Marcus Dale founded Corvina Labs in 2011, and Lina Voss joined in 2015 as head of research.",
    ),
    (
        0,
        "added_claim",
        "Corvina Labs was founded in 2011 by Lina Voss in Tallinn, and it was acquired by Siemens in 2019.",
    ),
)
ctx(
    "The Quillon 5 thermostat does not support Zigbee. It connects over Wi-Fi and Thread. The battery lasts about 14 months under normal use.",
    (
        1,
        "paraphrase",
        "Zigbee is not supported by the Quillon 5; it talks to your network over Wi-Fi or Thread instead.",
    ),
    (1, "faithful", "Under normal use, the Quillon 5 battery lasts roughly 14 months."),
    (0, "negation_flip", "The Quillon 5 thermostat supports Zigbee."),
    (0, "swap_number", "The Quillon 5 battery lasts about 4 months under normal use."),
)
ctx(
    "Members of the Fenwick Rowing Club pay $20 per session. Non-members pay $35. Lessons for children under 12 are free, but only on Saturday mornings.",
    (
        1,
        "paraphrase",
        "A session costs Fenwick members $20, while people without a membership are charged $35.",
    ),
    (1, "faithful", "Children under 12 can take lessons at no cost on Saturday mornings."),
    (
        0,
        "swap_number",
        "Members of the Fenwick Rowing Club pay $35 per session, and non-members pay $20.",
    ),
    (
        0,
        "overgeneralize",
        "Lessons for children under 12 are always free at the Fenwick Rowing Club, on any day of the week.",
    ),
)
ctx(
    "The Garrow Bridge is closed to trucks heavier than 7 tonnes. Cars may cross at any hour. Pedestrians can use the bridge only between 6 a.m. and 10 p.m.",
    (
        1,
        "paraphrase",
        "Vehicles weighing more than 7 tonnes are banned from the Garrow Bridge, whereas cars can cross day and night.",
    ),
    (1, "faithful", "People on foot may use the Garrow Bridge between 6 a.m. and 10 p.m."),
    (0, "drop_condition", "Pedestrians can use the Garrow Bridge."),
    (0, "overgeneralize", "All vehicles can cross the Garrow Bridge at any hour."),
)
ctx(
    "In the Meriden trial, 140 patients received the drug Talvex and 138 received a placebo. Headaches were reported by 9 percent of the Talvex group and 4 percent of the placebo group. The trial was led by Dr. Anika Sorell at Brightwater Hospital.",
    (
        1,
        "paraphrase",
        "Dr. Anika Sorell of Brightwater Hospital ran the Meriden trial, in which 140 people were given Talvex and 138 got a placebo.",
    ),
    (
        1,
        "faithful",
        "Headaches affected 9 percent of patients on Talvex versus 4 percent on placebo.",
    ),
    (
        0,
        "swap_number",
        "Headaches were reported by 4 percent of the Talvex group and 9 percent of the placebo group.",
    ),
    (
        0,
        "added_claim",
        "The Meriden trial was led by Dr. Anika Sorell at Brightwater Hospital. Talvex was approved by regulators in 2021.",
    ),
)
ctx(
    "Refunds at Pelham Outfitters are available within 30 days of purchase, unless the item was bought on clearance. Store credit is offered for returns between 31 and 60 days.",
    (
        1,
        "paraphrase",
        "Pelham Outfitters gives your money back if you return an item within 30 days, as long as it was not a clearance purchase.",
    ),
    (
        1,
        "faithful",
        "Returns made 31 to 60 days after purchase get store credit at Pelham Outfitters.",
    ),
    (0, "drop_condition", "Refunds at Pelham Outfitters are available within 30 days of purchase."),
    (
        0,
        "swap_number",
        "Refunds at Pelham Outfitters are available within 60 days of purchase, unless the item was bought on clearance.",
    ),
)
ctx(
    "The Sable River flows north from Lake Orrin to the port of Kessick. It is navigable by barges only in spring, when the water is high. The river is 412 kilometres long.",
    (
        1,
        "paraphrase",
        "Starting at Lake Orrin, the Sable River runs northward to Kessick and has a length of 412 kilometres.",
    ),
    (1, "faithful", "Barges can navigate the Sable River only in spring, when the water is high."),
    (0, "overgeneralize", "Barges can always navigate the Sable River, in every season."),
    (0, "swap_entity", "The Sable River flows north from the port of Kessick to Lake Orrin."),
)
ctx(
    "Tovin Software's Atlas plan includes 5 user seats and 200 GB of storage. Extra seats cost $8 each per month. The plan does not include phone support.",
    (
        1,
        "paraphrase",
        "The Atlas plan from Tovin comes with 200 GB of storage and room for 5 users.",
    ),
    (1, "faithful", "Phone support is not part of Tovin's Atlas plan."),
    (0, "negation_flip", "The Atlas plan includes phone support."),
    (
        0,
        "added_claim",
        "Tovin's Atlas plan includes 5 user seats and 200 GB of storage, plus unlimited video calls.",
    ),
)
ctx(
    "Mayor Elda Prisk of Varrow announced that the new library will open on 3 May 2027. The building was designed by the architect Tomas Heyl. It will hold 80,000 books.",
    (
        1,
        "paraphrase",
        "Varrow's new library, designed by Tomas Heyl, is set to open its doors on 3 May 2027.",
    ),
    (1, "faithful", "The new library in Varrow will hold 80,000 books, Mayor Elda Prisk said."),
    (
        0,
        "swap_entity",
        "The new Varrow library was designed by Elda Prisk, and Mayor Tomas Heyl announced its opening.",
    ),
    (0, "swap_number", "Varrow's new library will open on 3 May 2028."),
)
ctx(
    "Kettleby Farm sells eggs from April to October. The farm shop is closed on Mondays. Visitors may pick strawberries in June, but not in July.",
    (1, "paraphrase", "From April through October you can buy eggs at Kettleby Farm."),
    (1, "faithful", "Strawberry picking at Kettleby Farm is possible in June but not in July."),
    (0, "negation_flip", "The Kettleby Farm shop is open on Mondays."),
    (0, "overgeneralize", "Visitors may pick strawberries at Kettleby Farm all summer long."),
)
ctx(
    "The Nervi 2 drone can fly for 38 minutes on one battery. Its maximum range is 9 kilometres. It must not be flown in winds above 40 km/h.",
    (
        1,
        "paraphrase",
        "One battery keeps the Nervi 2 in the air for 38 minutes, and it can travel up to 9 kilometres away.",
    ),
    (1, "faithful", "The Nervi 2 should not be flown when winds exceed 40 km/h."),
    (0, "negation_flip", "The Nervi 2 drone can be flown in winds above 40 km/h."),
    (
        0,
        "swap_number",
        "The Nervi 2 drone can fly for 9 minutes on one battery, with a maximum range of 38 kilometres.",
    ),
)
ctx(
    "Ravel Insurance covers water damage from burst pipes. It does not cover damage caused by floods. Claims must be filed within 14 days of the incident.",
    (
        1,
        "paraphrase",
        "If a pipe bursts, Ravel Insurance pays for the resulting water damage, but flooding is excluded.",
    ),
    (1, "faithful", "A claim with Ravel Insurance has to be filed within 14 days of the incident."),
    (0, "negation_flip", "Ravel Insurance covers damage caused by floods."),
    (0, "overgeneralize", "Ravel Insurance covers all water damage."),
)
ctx(
    "The Orla Prize is awarded every two years to a poet under 35. The 2024 winner was Hamid Castell, for the collection Salt Hours. The prize carries 15,000 euros.",
    (1, "paraphrase", "Hamid Castell took the 2024 Orla Prize with his collection Salt Hours."),
    (
        1,
        "faithful",
        "Every two years the Orla Prize goes to a poet younger than 35, and it is worth 15,000 euros.",
    ),
    (0, "drop_condition", "The Orla Prize is awarded every two years to a poet."),
    (
        0,
        "added_claim",
        "Hamid Castell won the 2024 Orla Prize for Salt Hours, his third collection to win a national award.",
    ),
)
ctx(
    "At Dunmore Clinic, flu shots are given to adults on Tuesdays and Thursdays. Children receive them only on Fridays. No appointment is needed.",
    (
        1,
        "paraphrase",
        "Adults can get a flu shot at Dunmore Clinic on Tuesdays or Thursdays, without booking an appointment.",
    ),
    (1, "faithful", "At Dunmore Clinic, children get flu shots only on Fridays."),
    (
        0,
        "swap_entity",
        "At Dunmore Clinic, children receive flu shots on Tuesdays and Thursdays, and adults only on Fridays.",
    ),
    (0, "negation_flip", "An appointment is needed for a flu shot at Dunmore Clinic."),
)
ctx(
    "The Brenmoor Museum is free for students with a valid ID. Adults pay 12 euros. Photography is allowed in the main hall but not in the manuscript room.",
    (
        1,
        "paraphrase",
        "Students who show a valid ID get into the Brenmoor Museum without paying, while adults are charged 12 euros.",
    ),
    (
        1,
        "faithful",
        "You can take photos in the main hall of the Brenmoor Museum, but not in the manuscript room.",
    ),
    (0, "drop_condition", "The Brenmoor Museum is free for students."),
    (0, "overgeneralize", "Photography is allowed everywhere in the Brenmoor Museum."),
)
ctx(
    "Sorrel Airlines allows one carry-on bag of up to 8 kg in economy. Business passengers may bring two bags of up to 12 kg each. Pets are not permitted in the cabin.",
    (
        1,
        "paraphrase",
        "In economy on Sorrel Airlines you get a single carry-on weighing no more than 8 kg.",
    ),
    (1, "faithful", "Sorrel Airlines does not permit pets in the cabin."),
    (
        0,
        "swap_entity",
        "Economy passengers on Sorrel Airlines may bring two bags of up to 12 kg each.",
    ),
    (0, "negation_flip", "Pets are permitted in the cabin on Sorrel Airlines."),
)
ctx(
    "The town of Ellisford has 23,400 residents. Its main employer is the Carrow paper mill, which employs 1,150 people. The mill was bought by Norland Group in 2018.",
    (
        1,
        "paraphrase",
        "Norland Group acquired the Carrow paper mill, Ellisford's biggest employer, in 2018.",
    ),
    (
        1,
        "faithful",
        "Ellisford has 23,400 residents, and the Carrow paper mill there employs 1,150 people.",
    ),
    (
        0,
        "swap_number",
        "The Carrow paper mill employs 23,400 people in Ellisford, a town of 1,150 residents.",
    ),
    (
        0,
        "added_claim",
        "The Carrow paper mill was bought by Norland Group in 2018, which then cut 300 jobs.",
    ),
)
ctx(
    "Version 4.2 of the Lumen editor removed support for Python 3.8. Plugins written for version 3 still work, except those that use the old theme API. Version 4.2 was released on 12 March 2026.",
    (1, "paraphrase", "Lumen 4.2, which came out on 12 March 2026, dropped Python 3.8 support."),
    (
        1,
        "faithful",
        "Version 3 plugins still work in Lumen 4.2, apart from those built on the old theme API.",
    ),
    (0, "drop_condition", "Plugins written for version 3 still work in Lumen 4.2."),
    (0, "negation_flip", "Version 4.2 of the Lumen editor added support for Python 3.8."),
)
ctx(
    "The Hobart cooking course lasts 6 weeks and costs 450 pounds. It is taught by chef Renata Oyelaran. Students must bring their own knives.",
    (
        1,
        "paraphrase",
        "Chef Renata Oyelaran teaches the six-week Hobart cooking course, priced at 450 pounds.",
    ),
    (1, "faithful", "Hobart cooking students have to bring their own knives."),
    (0, "swap_number", "The Hobart cooking course lasts 4 weeks and costs 650 pounds."),
    (
        0,
        "added_claim",
        "The Hobart cooking course is taught by chef Renata Oyelaran, who trained in Lyon for ten years.",
    ),
)
ctx(
    "The Vireo app stores chat history for 90 days. Users on the Pro plan can keep history for 2 years. History is never shared with advertisers.",
    (
        1,
        "paraphrase",
        "Vireo keeps your chat history for 90 days, or for two years if you pay for Pro.",
    ),
    (1, "faithful", "Vireo never shares chat history with advertisers."),
    (0, "overgeneralize", "The Vireo app stores chat history for 2 years for all users."),
    (0, "negation_flip", "Vireo shares chat history with advertisers."),
)
ctx(
    "Greyhill School's gym is open to the public on weekends. On weekdays it is reserved for students until 5 p.m. Entry costs 3 dollars for adults.",
    (
        1,
        "paraphrase",
        "Anyone can use the Greyhill School gym on Saturdays and Sundays, and adults pay 3 dollars to get in.",
    ),
    (1, "faithful", "On weekdays the Greyhill gym is reserved for students until 5 p.m."),
    (0, "overgeneralize", "Greyhill School's gym is always open to the public."),
    (0, "swap_number", "Entry to the Greyhill School gym costs 5 dollars for adults."),
)
ctx(
    "Professor Ines Whitlock discovered the comet Halden-7 in 1998 from the Rook Observatory. Her student Paul Arden later measured its orbit, which takes 41 years.",
    (
        1,
        "paraphrase",
        "Halden-7 was first spotted in 1998 by Professor Ines Whitlock, working at the Rook Observatory.",
    ),
    (
        1,
        "faithful",
        "Paul Arden, a student of Whitlock, measured the orbit of Halden-7, which lasts 41 years.",
    ),
    (
        0,
        "swap_entity",
        "Paul Arden discovered the comet Halden-7 in 1998, and Professor Ines Whitlock later measured its orbit.",
    ),
    (0, "swap_number", "The orbit of the comet Halden-7 takes 98 years."),
)
ctx(
    "The Cinder 3 laptop has 16 GB of memory and a 1 TB drive. The battery lasts up to 11 hours when browsing. The keyboard is not backlit.",
    (
        1,
        "paraphrase",
        "Browsing on the Cinder 3 drains the battery in at most 11 hours; the machine carries 16 GB of RAM memory and a 1 TB drive.",
    ),
    (1, "faithful", "The Cinder 3 keyboard has no backlight."),
    (0, "negation_flip", "The Cinder 3 laptop has a backlit keyboard."),
    (
        0,
        "added_claim",
        "The Cinder 3 laptop has 16 GB of memory and a 1 TB drive, and it weighs just 900 grams.",
    ),
)
ctx(
    "Ashcombe Library lends up to 10 books at a time for 3 weeks. Loans can be renewed twice, unless another reader has reserved the book. Late returns cost 20 cents per day.",
    (1, "paraphrase", "At Ashcombe Library you can borrow as many as 10 books for 3 weeks."),
    (
        1,
        "faithful",
        "A loan can be renewed twice at Ashcombe, provided no other reader has reserved the book.",
    ),
    (0, "drop_condition", "Ashcombe Library loans can be renewed twice."),
    (0, "swap_number", "Ashcombe Library lends up to 3 books at a time for 10 weeks."),
)
ctx(
    "The Port Lenna ferry to Skarholm sails twice a day in summer. In winter it sails only on Wednesdays and Saturdays. The crossing takes 95 minutes.",
    (
        1,
        "paraphrase",
        "During summer there are two daily sailings from Port Lenna to Skarholm, each crossing lasting 95 minutes.",
    ),
    (1, "faithful", "In winter, the ferry to Skarholm only runs on Wednesdays and Saturdays."),
    (0, "overgeneralize", "The Port Lenna ferry to Skarholm sails twice a day all year round."),
    (
        0,
        "swap_entity",
        "The Port Lenna ferry to Skarholm sails twice a day in winter, and only on Wednesdays and Saturdays in summer.",
    ),
)
ctx(
    "Halvorsen Bank charges no fee for transfers within the country. International transfers cost 1.5 percent of the amount, with a minimum fee of 4 dollars. Transfers above 10,000 dollars require a manager's approval.",
    (1, "paraphrase", "Domestic transfers at Halvorsen Bank are free of charge."),
    (
        1,
        "faithful",
        "Sending money abroad with Halvorsen Bank costs 1.5 percent of the amount, at least 4 dollars.",
    ),
    (0, "drop_condition", "Transfers at Halvorsen Bank require a manager's approval."),
    (
        0,
        "added_claim",
        "Halvorsen Bank charges no fee for domestic transfers and offers free currency exchange.",
    ),
)
ctx(
    "The Tamsin heat pump works down to an outdoor temperature of minus 20 degrees. Below that, a backup heater switches on. The unit is rated at 9 kilowatts.",
    (
        1,
        "paraphrase",
        "A backup heater takes over once it gets colder than minus 20 degrees outside the Tamsin heat pump.",
    ),
    (
        1,
        "faithful",
        "The Tamsin heat pump is rated at 9 kilowatts and works down to minus 20 degrees outdoors.",
    ),
    (
        0,
        "overgeneralize",
        "The Tamsin heat pump works at any outdoor temperature without a backup heater.",
    ),
    (
        0,
        "swap_number",
        "The Tamsin heat pump works down to an outdoor temperature of minus 9 degrees and is rated at 20 kilowatts.",
    ),
)
ctx(
    "The Wren Theatre's production of The Glass Orchard runs from 4 June to 28 August. Tickets cost 30 pounds, and 15 pounds for students. Children under 8 are not admitted.",
    (1, "paraphrase", "The Glass Orchard plays at the Wren Theatre between 4 June and 28 August."),
    (
        1,
        "faithful",
        "Students pay 15 pounds for The Glass Orchard, while regular tickets are 30 pounds.",
    ),
    (0, "negation_flip", "Children under 8 are admitted to The Glass Orchard at the Wren Theatre."),
    (0, "drop_condition", "Tickets for The Glass Orchard at the Wren Theatre cost 15 pounds."),
)
ctx(
    "Beekeeper Oren Malloy keeps 40 hives near the village of Tisbury. His honey is sold at the Tisbury market on Saturdays. He never treats his hives with antibiotics.",
    (1, "paraphrase", "Near Tisbury, Oren Malloy looks after 40 beehives."),
    (
        1,
        "faithful",
        "Oren Malloy's honey is sold at the Tisbury market on Saturdays, and his hives are never treated with antibiotics.",
    ),
    (0, "negation_flip", "Oren Malloy treats his hives with antibiotics."),
    (0, "added_claim", "Oren Malloy keeps 40 hives near Tisbury and exports his honey to Japan."),
)

rows = []
for i, (context, cases) in enumerate(C):
    split = "dev" if i < 10 else "test"
    for j, (label, kind, resp) in enumerate(cases):
        rows.append(
            {
                "id": f"h{i:02d}-{j}",
                "split": split,
                "kind": kind,
                "label": label,
                "context": context,
                "response": resp,
            }
        )
with open(__import__("pathlib").Path(__file__).with_name("grounding_hard.jsonl"), "w") as f:
    for r in rows:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
print(
    len(rows),
    sum(r["label"] for r in rows),
    {k: sum(r["kind"] == k for r in rows) for k in sorted({r["kind"] for r in rows})},
)
